"""How processes come to be: ranks, roles, scheduler, workers, the user's script.

``python -m launcher.run`` (:mod:`launcher.run`) reads the options (:mod:`launcher.options`),
plans every rank (:mod:`launcher.spec`), then realises its own rank (:mod:`launcher.rank`, with
the Dask pieces in :mod:`launcher.cluster`): the scheduler address travels by MPI, a Slurm
rendezvous or a file (:mod:`launcher.exchange`, :mod:`launcher.contact`, :mod:`launcher.munge`,
:mod:`launcher.hostlist`), secured per job (:mod:`launcher.security`), bound to the job's network
(:mod:`launcher.network`); MPI jobs join and leave their world through :mod:`launcher.mpi`.
Outside a launcher, :mod:`launcher.local` runs a local cluster.
``python -m launcher.sbatch`` renders the ``slurm/`` templates; :mod:`launcher.demo` is the job
run when no script is given.
"""
