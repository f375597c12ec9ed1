"""Built-in executors (the ``ddbench.executors`` entry-point group): ``local`` and ``slurm``."""
