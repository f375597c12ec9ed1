"""ddbench: a plugin-based benchmark suite for dataset distillation with generative priors."""

__version__ = "0.1.0"

# every process that imports ddbench (the CLI, sweep workers, SLURM jobs, a notebook) skips torch's
# "No CUDA runtime is found" notice on CPU machines; a logging filter, no torch import
from ddbench.util._quiet import silence_known_notices as _silence

_silence()
del _silence


def __getattr__(name: str) -> object:
    # `ddbench.evaluate_set` imports torch only when used: `import ddbench` stays light
    if name == "evaluate_set":
        from ddbench.running.scoring import evaluate_set

        return evaluate_set
    raise AttributeError(f"module 'ddbench' has no attribute {name!r}")


__all__ = ["__version__", "evaluate_set"]
