"""DaskEngine, its options, the communicator, the planner and the rank executor."""
