"""One way for benchmark scripts to keep their figures: a JSON file per script under one directory,
with the command that produced it, the commit and the machine (ddbench.provenance).

    from record import write_record
    write_record("ld3m_z_signal", {"rows": rows})

The directory is ``$DDBENCH_BENCH_OUT`` or ``bench-out/benchmarks``.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import Any

from ddbench import fileio, provenance


def output_dir() -> Path:
    return Path(os.environ.get("DDBENCH_BENCH_OUT", "bench-out/benchmarks"))


def write_record(name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` with their provenance to ``output_dir()/name.json`` (atomically)."""
    found = provenance.collect()
    record = {
        "benchmark": name,
        "command": " ".join(["python", *sys.argv]),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": found.git_commit,
        "host": found.host,
        "versions": found.versions,
        "figures": figures,
    }
    path = output_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json_atomic(path, record)
    print(f"figures → {path}")
    return path
