"""The rank executor: runs a distributed plan on every rank, exchanging frames via the comm."""
