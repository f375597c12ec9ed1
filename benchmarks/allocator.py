"""glibc's allocator as it comes against ddbench's tuning (`ddbench.engine.allocator`), side by side.

The allocator is set once per process, so each setting runs the other benchmark scripts in fresh
processes (``DDBENCH_ALLOCATOR=system`` or ``tuned``), the settings alternating ``--rounds`` times:

- ``profile_ld3m.py``: one LD3M + DM iteration at ``--ipc``, its denoiser calls checkpointed
  (``checkpointed``: ``checkpoint=true``) and kept for backward (``kept``: ``checkpoint=false``), and
  pixel + DM;
- ``bench_evaluators.py speed``: seconds per training epoch of ``--evaluators`` at 28 px.

Each cell is the median over rounds of the child's own figure (median s/it, median s/epoch); the
evaluators' peak RSS (the most over rounds) beside them.

    python benchmarks/allocator.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from record import emit, table

from ddbench.util.units import format_bytes

HERE = Path(__file__).resolve().parent
SETTINGS = ("system", "tuned")
LD3M_VARIANTS = "checkpointed=checkpoint=true;kept=checkpoint=false"


def run_child(script: str, args: list[str], setting: str, threads: int) -> dict:
    """Run a benchmark script under one allocator setting; its record."""
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "DDBENCH_ALLOCATOR": setting, "DDBENCH_BENCH_OUT": out, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, str(HERE / script), *args], env=env, check=True, stdout=subprocess.DEVNULL)
        (record,) = Path(out).glob("*.json")
        return json.loads(record.read_text())


def ld3m_seconds(record: dict) -> dict[str, tuple[float, None]]:
    """Workload → (total s per iteration, no peak), from profile_ld3m's stage table."""
    figure = record["figures"]["tables"][0]
    (total,) = [row for row in figure["rows"] if row[0] == "total"]
    return {
        f"ld3m + DM, {name}" if name != "pixel + DM" else name: (float(v), None)
        for name, v in zip(figure["columns"][1:], total[1:])
    }


def evaluator_seconds(record: dict) -> dict[str, tuple[float, int]]:
    """Workload → (s per epoch, peak RSS bytes), from bench_evaluators' measurements."""
    return {
        f"{m['evaluator']} epoch (28 px, IPC 10)": (m["epoch_s_median"], m["peak_bytes"])
        for m in record["figures"]["measurements"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=2, help="timed LD3M iterations per variant and round")
    parser.add_argument("--evaluators", default="convnet,resnet18,vit")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[str, dict[str, list[float]]] = {s: {} for s in SETTINGS}
    peaks: dict[str, dict[str, list[int]]] = {s: {} for s in SETTINGS}
    ld3m_args = ["--ipc", str(args.ipc), "--iterations", str(args.iterations), "--threads", str(args.threads),
                 "--pixel", "--variants", LD3M_VARIANTS]  # fmt: skip
    eval_args = ["speed", "--evaluators", args.evaluators, "--resolutions", "28", "--epochs", "3",
                 "--threads", str(args.threads)]  # fmt: skip
    for round_ in range(args.rounds):
        for setting in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
            print(f"round {round_ + 1}/{args.rounds}: {setting}", flush=True)
            found = {
                **ld3m_seconds(run_child("profile_ld3m.py", ld3m_args, setting, args.threads)),
                **evaluator_seconds(run_child("bench_evaluators.py", eval_args, setting, args.threads)),
            }
            for workload, (value, peak) in found.items():
                seconds[setting].setdefault(workload, []).append(value)
                if peak is not None:
                    peaks[setting].setdefault(workload, []).append(peak)
    rows = []
    for workload in seconds["system"]:
        system, tuned = (statistics.median(seconds[s][workload]) for s in SETTINGS)
        peak = (
            " / ".join(format_bytes(max(peaks[s][workload])) for s in SETTINGS) if workload in peaks["system"] else "—"
        )
        rows.append([workload, f"{system:.3f}", f"{tuned:.3f}", f"{tuned / system:.2f}", peak])
    note = (
        f"median s per iteration (LD3M at IPC {args.ipc}, T = 10) or per epoch over {args.rounds} round(s), "
        f"settings alternating, each in fresh processes; torch threads {args.threads}"
    )
    columns = ["workload", "glibc as it comes (s)", "tuned (s)", "tuned / as it comes", "peak RSS: as it comes / tuned"]
    emit("allocator", [table(columns, rows, note=note)], seconds=seconds, peaks=peaks)


if __name__ == "__main__":
    main()
