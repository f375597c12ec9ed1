"""A store's scores as a benchmark record: what `ddbench leaderboard` shows for a `ddbench run` store,
mean ± std per row and column, read from the store (nothing is recomputed). For figures that runs
measured rather than a script, so that the README's tables of them are generated like the others.

    python benchmarks/store_scores.py --out bench-out/random-ld3m --evaluators convnet
    python benchmarks/store_scores.py --out bench-out/ld3m-dc-lr --columns evaluator

The record's machine line is this machine; the runs' own host records are in the store
(`ddbench show RUN_ID`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from record import emit, table

from ddbench.errors import InvalidOptionError
from ddbench.results.leaderboard import cell_text, leaderboard_table, mark_notes
from ddbench.results.report.rows import with_prior_variants
from ddbench.results.store import RESULTS_FILENAME, ResultsStore
from ddbench.running.grid import expand_evaluators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the `ddbench run --out` directory")
    parser.add_argument("--rows", default="prior,matcher", help="row keys, as `ddbench leaderboard --rows`")
    parser.add_argument("--columns", default="dataset", choices=("dataset", "evaluator"))
    parser.add_argument("--evaluators", default=None, help="only these evaluators (comma-separated; 'unseen')")
    parser.add_argument("--ipc", default=None, help="only these IPCs (comma-separated)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    path = args.out / RESULTS_FILENAME
    if not path.is_file():
        raise InvalidOptionError(f"No results store at {path}; pass the --out of a `ddbench run`")
    with ResultsStore(path, read_only=True) as store:
        scores = store.scores_frame()
    filters: dict[str, list] = {}
    if args.evaluators:
        filters["evaluator"] = expand_evaluators(args.evaluators.split(","))
    if args.ipc:
        filters["ipc"] = [int(i) for i in args.ipc.split(",")]
    board = leaderboard_table(
        with_prior_variants(scores), rows=args.rows.split(","), columns=args.columns, filters=filters or None
    )
    rows = [[cell_text(v) for v in row] for row in board.rows]
    notes = [f"accuracy %, mean ± std over seeds, read from {path}", *mark_notes(board)]
    emit("store_scores", [table(list(board.columns), rows, title=args.title, note="; ".join(notes))])


if __name__ == "__main__":
    main()
