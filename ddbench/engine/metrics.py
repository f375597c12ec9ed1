"""Per-iteration metrics of a distillation run: ``metrics.jsonl`` in its run directory.

One JSON line per iteration, appended as the iteration ends::

    {"iteration": 0, "loss": 12.5, "seconds": 0.41, "peak_memory_bytes": 734003200, "lr": 0.0102}

``iteration`` counts from 0, ``seconds`` is that iteration's wall time (s/it), ``peak_memory_bytes``
the run's peak so far in this process (`ddbench.engine.memory.PeakMemory`), and any further keys are the
matcher's own scalars (`Matcher.iteration_metrics`, e.g. a learned learning rate).

The file stays consistent with the checkpoint: opening it for a run that resumes at iteration N
keeps only the complete lines of iterations before N (a line written after the last checkpoint, or
torn by a kill, is dropped and written again), and the file is synced before each checkpoint. With
``tensorboard=True`` the same scalars also go to TensorBoard event files under ``<run dir>/tensorboard``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ddbench.errors import InvalidOptionError
from ddbench.util.fileio import write_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
#: keys the engine writes; a matcher's own scalars must use other names
CORE_KEYS = ("iteration", "loss", "seconds", "peak_memory_bytes")
TENSORBOARD_INSTALL = "pip install 'ddbench[tensorboard]' (or pip install tensorboard)"


def check_tensorboard() -> None:
    """One clear error, before any work starts, when ``--tensorboard`` is asked for without it."""
    if importlib.util.find_spec("tensorboard") is None:
        raise InvalidOptionError(
            f"--tensorboard needs the tensorboard package, which is not installed; {TENSORBOARD_INSTALL}"
        )


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("iteration"), int) else None


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete lines of a run's ``metrics.jsonl`` in order (empty when there is none)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [record for line in text.splitlines() if (record := _parse(line)) is not None]


def summarise(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What the store keeps of a run's metrics: loss first/final/min, median s/it, peak memory and the
    final value of each matcher scalar (``final``)."""
    losses = [float(r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))]
    seconds = [float(r["seconds"]) for r in records if isinstance(r.get("seconds"), (int, float))]
    peaks = [int(r["peak_memory_bytes"]) for r in records if isinstance(r.get("peak_memory_bytes"), (int, float))]
    final = {
        k: v for k, v in (records[-1].items() if records else ()) if k not in CORE_KEYS and isinstance(v, (int, float))
    }
    return {
        "iterations": len(records),
        "loss_first": losses[0] if losses else None,
        "loss_final": losses[-1] if losses else None,
        "loss_min": min(losses) if losses else None,
        "seconds_per_iteration_median": statistics.median(seconds) if seconds else None,
        "peak_memory_bytes": max(peaks) if peaks else None,
        "final": final,
    }


class RunMetrics:
    """Appends one line per iteration to ``<run_dir>/metrics.jsonl`` (see the module docstring).

    ``with RunMetrics(run_dir, start=resumed_from) as metrics: metrics.record(...)``
    """

    def __init__(self, run_dir: str | os.PathLike[str], start: int = 0, tensorboard: bool = False) -> None:
        if tensorboard:
            check_tensorboard()
        self.path = Path(run_dir) / METRICS_FILE
        kept = [r for r in read_metrics(run_dir) if r["iteration"] < start]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_atomic(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed process logged after the checkpoint it resumes from
            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=start)

    def record(
        self,
        iteration: int,
        loss: float,
        seconds: float,
        peak_memory_bytes: int,
        extra: Mapping[str, float] | None = None,
    ) -> None:
        """One iteration's line; ``extra`` are the matcher's scalars."""
        extra = dict(extra or {})
        clash = sorted(set(extra) & set(CORE_KEYS))
        if clash:
            raise InvalidOptionError(
                f"The matcher reports per-iteration metrics named {clash}, names the engine uses; rename them in its iteration_metrics()"
            )
        record = {
            "iteration": iteration,
            "loss": loss,
            "seconds": round(seconds, 6),
            "peak_memory_bytes": int(peak_memory_bytes),
        }
        record.update({k: float(v) for k, v in extra.items()})
        # a non-finite float is not JSON: written as null
        line = json.dumps(
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        )
        self._file.write(line + "\n")
        self._file.flush()  # a killed process keeps what it flushed (the page cache outlives it)
        if self._writer is not None:
            self._writer.add_scalar("loss", loss, iteration)
            self._writer.add_scalar("seconds_per_iteration", seconds, iteration)
            self._writer.add_scalar("peak_memory_MiB", peak_memory_bytes / 2**20, iteration)
            for key, value in extra.items():
                self._writer.add_scalar(f"matcher/{key}", value, iteration)

    def sync(self) -> None:
        """To disk before a checkpoint, so a checkpoint never covers iterations the file lacks."""
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunMetrics:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = [
    "METRICS_FILE",
    "TENSORBOARD_DIR",
    "CORE_KEYS",
    "RunMetrics",
    "read_metrics",
    "summarise",
    "check_tensorboard",
]
