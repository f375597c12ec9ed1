"""The results store: every distillation run and every evaluation score, in one SQLite file.

The file lives at ``<out>/results.sqlite``. It is opened in WAL mode with a busy timeout, and every
write is one ``BEGIN IMMEDIATE`` transaction, so several processes (a sweep's workers, a SLURM
array) can write to it at once without losing rows. Each row carries the versions, git commit and
host that produced it (`ddbench.results.provenance`).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from ddbench.engine.spec import REPORTS
from ddbench.errors import CorruptFileError, InvalidOptionError
from ddbench.results.provenance import Provenance, collect
from ddbench.util.fileio import FileLock, check_writable_dir

RESULTS_FILENAME = "results.sqlite"
#: the prior and matcher a full-data baseline's run records (`ddbench baseline`: no distillation)
FULL_DATA = "full-data"

#: bump when the tables change, and add the step from the previous version to `_MIGRATIONS`
SCHEMA_VERSION = 2

#: seconds a writer waits for another process's transaction before giving up
BUSY_TIMEOUT_S = 60.0

RUN_STATUSES = ("running", "done", "failed")

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL,
    dataset TEXT NOT NULL,
    prior TEXT NOT NULL,
    matcher TEXT NOT NULL,
    ipc INTEGER NOT NULL,
    res INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    error TEXT,
    run_dir TEXT,
    distill_seconds REAL,
    distill_peak_memory_bytes INTEGER,
    seconds_per_iteration REAL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    versions_json TEXT,
    git_commit TEXT,
    host_json TEXT,
    metrics_json TEXT
);
CREATE TABLE scores (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    evaluator TEXT NOT NULL,
    seed INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    accuracy REAL NOT NULL,
    accuracy_max REAL,
    report TEXT NOT NULL CHECK (report IN ('final', 'max')),
    protocol_json TEXT NOT NULL,
    train_seconds REAL,
    eval_seconds REAL,
    peak_memory_bytes INTEGER,
    created_at TEXT NOT NULL,
    versions_json TEXT,
    git_commit TEXT,
    UNIQUE (run_id, evaluator, seed, protocol)
);
"""

#: statements that bring a store of schema version N to N + 1 (stores are upgraded when opened to write)
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the summary of a run's per-iteration metrics (`ddbench.engine.metrics.summarise`)
    1: ("ALTER TABLE runs ADD COLUMN metrics_json TEXT",),
}

#: columns of `scores_frame`, in order (an empty store still yields them, so callers can filter)
SCORE_COLUMNS = (
    "run_id", "dataset", "prior", "matcher", "ipc", "res", "evaluator", "seed", "protocol",
    "accuracy", "accuracy_max", "report", "train_seconds", "eval_seconds", "peak_memory_bytes",
    "created_at", "protocol_json", "spec_json", "versions_json", "git_commit",
)  # fmt: skip

RUN_COLUMNS = (
    "run_id", "dataset", "prior", "matcher", "ipc", "res", "status", "error", "run_dir",
    "distill_seconds", "distill_peak_memory_bytes", "seconds_per_iteration", "created_at",
    "finished_at", "spec_json", "versions_json", "git_commit", "host_json", "metrics_json",
)  # fmt: skip


def store_path(out_dir: str | os.PathLike[str]) -> Path:
    """Where the store of an output directory lives."""
    return Path(out_dir) / RESULTS_FILENAME


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise InvalidOptionError(f"Expected {what} as plain JSON data (str, number, list, dict) but: {err}") from None


def _spec_name(spec: Mapping[str, Any], key: str) -> str:
    """A plugin name from a spec field, which is either the name or ``{"name": ..., ...}``."""
    value = spec.get(key)
    if isinstance(value, Mapping):
        value = value.get("name")
    if not isinstance(value, str) or not value:
        raise InvalidOptionError(f"Expected the spec to name its {key} (a non-empty string) but got {value!r}")
    return value


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptionError(f"Expected {what} as an integer or None but got {value!r}")
    return value


def _check_fraction(value: float | None, what: str, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    if value is None or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
        raise InvalidOptionError(
            f"Expected {what} as a fraction in [0, 1] but got {value!r} (pass accuracy / 100 if it is a percentage)"
        )
    return float(value)


class ResultsStore:
    """Runs and scores in a SQLite file; ``with ResultsStore(path) as store: ...``.

    Example::

        with ResultsStore(store_path("ddbench-out")) as store:
            store.start_run(spec.run_id, spec.to_dict(), run_dir)
            store.finish_run(spec.run_id, distill_seconds=12.5, peak_memory_bytes=2**30, seconds_per_iteration=0.1)
            store.add_score(spec.run_id, "convnet", 0, {"name": "dc"}, 0.81, None, 30.0, 1.2, 2**29)
            frame = store.scores_frame()

    ``provenance`` defaults to this process's versions, git commit and host (`ddbench.results.provenance`).
    One instance may be shared by threads; separate instances (or processes) may write at once.
    """

    def __init__(
        self, path: str | os.PathLike[str], provenance: Provenance | None = None, read_only: bool = False
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if self.path.is_dir():
            fix = (
                "move it aside or use another --out"
                if self.path.name == RESULTS_FILENAME  # OUT/results.sqlite, as the CLI opens it
                else f"use {store_path(self.path)} (ddbench.results.store.store_path(out_dir))"
            )
            raise InvalidOptionError(
                f"Expected the results store path to be a file but {self.path} is a directory; {fix}"
            )
        self._provenance = provenance
        self._lock = threading.RLock()
        if read_only:
            self._conn = self._open_read_only()
            return
        check_writable_dir(self.path.parent, "--out")
        # autocommit mode (isolation_level=None): transactions are opened explicitly in `_write`
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            # Switching to WAL answers "database is locked" at once, without waiting on the busy
            # timeout, while another process creates the schema; so openings queue on a file lock.
            open_lock = FileLock(self.path.with_name(self.path.name + ".open-lock"))
            open_lock.acquire(blocking=True)
            with open_lock:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._ensure_schema()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise self._translate(err) from err
        except CorruptFileError:
            self._conn.close()
            raise

    def _open_read_only(self) -> sqlite3.Connection:
        """A connection that writes nothing: no directory, lock file or schema (``leaderboard``, ``show``)."""
        if not self.path.is_file():
            raise InvalidOptionError(
                f"No results store at {self.path}; run `ddbench run --out {self.path.parent}` first or pass --out"
            )
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        if not os.access(self.path.parent, os.W_OK):
            # a WAL database in a folder nobody can write (a read-only mount): SQLite cannot create
            # its shared-memory file there, and no writer can change the file, so it is immutable
            uri += "&immutable=1"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            self._check_schema(version, tables)
            if version == 0:
                raise self._corrupt("it is empty (no ddbench tables)")
        except sqlite3.DatabaseError as err:
            conn.close()
            raise self._translate(err) from err
        except CorruptFileError:
            conn.close()
            raise
        return conn

    # ---------------------------------------------------------------------------- plumbing

    def _corrupt(self, why: str) -> CorruptFileError:
        return CorruptFileError(
            f"Cannot use {self.path} as a ddbench results store: {why}. Move it aside "
            f"(e.g. mv {self.path} {self.path}.bak) and run again to start a new store, or pass another --out."
        )

    def _bad_row(self, why: str) -> CorruptFileError:
        """One bad value, not a bad file: the rest of the store is worth keeping."""
        return CorruptFileError(
            f"Cannot read {self.path}: {why}. Fix or delete that row (sqlite3 {self.path}), or move the store "
            f"aside (mv {self.path} {self.path}.bak) to start a new one."
        )

    def _translate(self, err: sqlite3.DatabaseError) -> Exception:
        """A SQLite error as the user's problem: a corrupt file or an unwritable place (else unchanged)."""
        text = str(err).lower()
        if isinstance(err, sqlite3.OperationalError) and (
            "readonly" in text or "read-only" in text or "unable to open" in text
        ):
            return InvalidOptionError(
                f"Cannot write the results store {self.path} ({err}); pass --out a writable directory"
            )
        if type(err) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text or "decode" in text:
            return self._corrupt(f"it is not a readable SQLite database ({err})")
        return err

    def _check_schema(self, version: int, tables: set[str]) -> None:
        if version == 0 and tables:
            raise self._corrupt(f"it is a SQLite database of something else (tables {sorted(tables)})")
        if version > SCHEMA_VERSION:
            raise self._corrupt(
                f"it was written by a newer ddbench (schema {version}, this one reads up to {SCHEMA_VERSION}); "
                "upgrade ddbench instead if you want to keep it"
            )
        if version and not {"runs", "scores"} <= tables:
            raise self._corrupt(f"its tables {sorted(tables)} lack 'runs' and 'scores'")

    def _ensure_schema(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            self._check_schema(version, tables)
            if version == 0:
                # executescript would COMMIT the open transaction first; run the statements one by one
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front, so two writers queue on
        the busy timeout instead of deadlocking when both try to upgrade a read lock."""
        with self._lock, self._errors():
            self._check_open()
            if self.read_only:
                raise InvalidOptionError(
                    f"The results store {self.path} was opened read-only; open it without read_only=True to write"
                )
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A damaged page or an unwritable file found mid-query becomes one clear error, not a traceback."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise  # a constraint: the caller's to explain (e.g. add_score's missing run)
        except sqlite3.DatabaseError as err:
            translated = self._translate(err)
            if translated is err:
                raise
            raise translated from err

    def _check_open(self) -> None:
        if self._conn is None:
            raise InvalidOptionError(f"The results store {self.path} is closed; open a new ResultsStore")

    @property
    def provenance(self) -> Provenance:
        if self._provenance is None:
            self._provenance = collect()
        return self._provenance

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------------------------- runs

    def start_run(self, run_id: str, spec: Mapping[str, Any], run_dir: str | os.PathLike[str] | None) -> None:
        """Record a run as ``running``; a run already stored (resumed, retried) is restarted in place.

        Its scores are kept: the run id hashes everything that defines the synthetic set, so
        distilling it again (e.g. after its files were lost) reproduces the same set. To drop them,
        call `delete_run` first (``--force``).
        """
        dataset, prior, matcher = (_spec_name(spec, key) for key in ("dataset", "prior", "matcher"))
        ipc = _optional_int(spec.get("ipc"), "spec ipc")
        if ipc is None:
            raise InvalidOptionError("Expected the spec to give its ipc (images per class) but it has none")
        res = _optional_int(spec.get("res"), "spec res")
        prov = self.provenance
        row = {
            "run_id": run_id,
            "spec_json": _to_json(dict(spec), "the run spec"),
            "dataset": dataset,
            "prior": prior,
            "matcher": matcher,
            "ipc": ipc,
            "res": res,
            "run_dir": None if run_dir is None else str(run_dir),
            "created_at": _now(),  # of this attempt: a restart is a new distillation
            "versions_json": _to_json(prov.versions, "package versions"),
            "git_commit": prov.git_commit,
            "host_json": _to_json(prov.host, "host info"),
        }
        with self._write() as conn:
            columns = ", ".join(row)
            placeholders = ", ".join(f":{name}" for name in row)
            updates = ", ".join(f"{name} = excluded.{name}" for name in row if name != "run_id")
            conn.execute(
                f"INSERT INTO runs ({columns}, status) VALUES ({placeholders}, 'running') "
                f"ON CONFLICT (run_id) DO UPDATE SET {updates}, status = 'running', error = NULL, "
                "finished_at = NULL, distill_seconds = NULL, distill_peak_memory_bytes = NULL, "
                "seconds_per_iteration = NULL, metrics_json = NULL",
                row,
            )

    def finish_run(
        self,
        run_id: str,
        distill_seconds: float,
        peak_memory_bytes: int | None,
        seconds_per_iteration: float | None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a run ``done`` with its wall time, peak memory and time per iteration; ``metrics`` is
        the summary of its per-iteration metrics (`ddbench.engine.metrics.summarise`)."""
        with self._write() as conn:
            self._update_run(
                conn,
                run_id,
                status="done",
                error=None,
                distill_seconds=float(distill_seconds),
                distill_peak_memory_bytes=_optional_int(peak_memory_bytes, "peak_memory_bytes"),
                seconds_per_iteration=None if seconds_per_iteration is None else float(seconds_per_iteration),
                metrics_json=None if metrics is None else _to_json(dict(metrics), "the metrics summary"),
                finished_at=_now(),
            )

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run ``failed`` and keep the error text for `ddbench status`."""
        with self._write() as conn:
            self._update_run(conn, run_id, status="failed", error=str(error), finished_at=_now())

    def widen_evaluation(
        self, run_id: str, evaluators: Sequence[str], eval_seeds: Sequence[int]
    ) -> dict[str, Any] | None:
        """Record that the stored run ``run_id`` is now also evaluated by ``evaluators`` × ``eval_seeds``
        (a later spec asked more of an already distilled set): its stored spec lists the union, so that
        reports compare the suite's request with what the run was asked, not with its first request.

        Returns the stored spec after widening (None where no such run is stored)."""
        with self._write() as conn:
            row = conn.execute("SELECT spec_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            spec = json.loads(row[0])
            wanted = {
                "evaluators": list(dict.fromkeys([*(spec.get("evaluators") or []), *evaluators])),
                "eval_seeds": sorted({*(spec.get("eval_seeds") or []), *(int(s) for s in eval_seeds)}),
            }
            if all(spec.get(key) == value for key, value in wanted.items()):
                return spec
            widened = {**spec, **wanted}
            self._update_run(conn, run_id, spec_json=_to_json(widened, "the run spec"))
            return widened

    def _update_run(self, conn: sqlite3.Connection, run_id: str, **values: Any) -> None:
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        cursor = conn.execute(f"UPDATE runs SET {assignments} WHERE run_id = :run_id", {**values, "run_id": run_id})
        if cursor.rowcount == 0:
            raise InvalidOptionError(f"No run {run_id} in {self.path}; call start_run({run_id!r}, ...) first")

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's row, with ``spec``, ``versions``, ``host`` and ``metrics`` decoded from their JSON columns."""
        with self._lock, self._errors():
            self._check_open()
            row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        for column in ("spec_json", "versions_json", "host_json", "metrics_json"):
            text = record.pop(column, None)
            record[column.removesuffix("_json")] = None if text is None else json.loads(text)
        return record

    def delete_run(self, run_id: str) -> bool:
        """Remove a run and all its scores (``--force``); files in its run directory are left alone.

        Returns whether the run existed.
        """
        with self._write() as conn:
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    # ------------------------------------------------------------------------------ scores

    def add_score(
        self,
        run_id: str,
        evaluator: str,
        seed: int,
        protocol: Mapping[str, Any],
        accuracy: float,
        accuracy_max: float | None,
        train_seconds: float | None,
        eval_seconds: float | None,
        peak_memory_bytes: int | None,
    ) -> None:
        """Record (or replace) the score of one evaluator × seed under one protocol.

        Accuracies are fractions in [0, 1]. ``protocol`` is the protocol's full settings; its
        ``name`` (e.g. ``"dc"`` or ``"dc[epochs=300]"``) is part of the key and its ``report``
        (``"final"`` by default, or ``"max"``) says which accuracy the protocol reports.
        """
        name = protocol.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidOptionError(f"Expected the protocol to carry its name under 'name' but got {dict(protocol)!r}")
        report = protocol.get("report", "final")
        if report not in REPORTS:
            raise InvalidOptionError(f"Expected protocol report 'final' or 'max' but got {report!r}")
        prov = self.provenance
        row = {
            "run_id": run_id,
            "evaluator": evaluator,
            "seed": _optional_int(seed, "seed"),
            "protocol": name,
            "accuracy": _check_fraction(accuracy, "accuracy", nullable=False),
            "accuracy_max": _check_fraction(accuracy_max, "accuracy_max", nullable=True),
            "report": report,
            "protocol_json": _to_json(dict(protocol), "the protocol"),
            "train_seconds": None if train_seconds is None else float(train_seconds),
            "eval_seconds": None if eval_seconds is None else float(eval_seconds),
            "peak_memory_bytes": _optional_int(peak_memory_bytes, "peak_memory_bytes"),
            "created_at": _now(),
            "versions_json": _to_json(prov.versions, "package versions"),
            "git_commit": prov.git_commit,
        }
        if row["seed"] is None:
            raise InvalidOptionError("Expected an integer seed but got None")
        columns = ", ".join(row)
        placeholders = ", ".join(f":{column}" for column in row)
        key = ("run_id", "evaluator", "seed", "protocol")
        updates = ", ".join(f"{column} = excluded.{column}" for column in row if column not in key)
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO scores ({columns}) VALUES ({placeholders}) "
                    f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
                    row,
                )
        except sqlite3.IntegrityError as err:
            if "FOREIGN KEY" in str(err):
                raise InvalidOptionError(
                    f"No run {run_id} in {self.path} to score; call start_run({run_id!r}, ...) first"
                ) from None
            raise

    def has_score(self, run_id: str, evaluator: str, seed: int, protocol_name: str) -> bool:
        """Whether this evaluator × seed × protocol was already scored (so a resumed sweep skips it)."""
        with self._lock, self._errors():
            self._check_open()
            row = self._conn.execute(
                "SELECT 1 FROM scores WHERE run_id = ? AND evaluator = ? AND seed = ? AND protocol = ?",
                (run_id, evaluator, seed, protocol_name),
            ).fetchone()
        return row is not None

    # ------------------------------------------------------------------------------ frames

    def scores_frame(self) -> pd.DataFrame:
        """Every score joined with its run's dataset, prior, matcher, ipc, res and spec."""
        select = ", ".join(
            f"r.{c}" if c in ("dataset", "prior", "matcher", "ipc", "res", "spec_json") else f"s.{c}"
            for c in SCORE_COLUMNS
        )
        return self._frame(
            f"SELECT {select} FROM scores s JOIN runs r USING (run_id) "
            "ORDER BY r.dataset, r.prior, r.matcher, r.ipc, s.evaluator, s.protocol, s.seed"
        )

    def runs_frame(self) -> pd.DataFrame:
        """Every run, oldest first (a column an older store lacks, read without upgrading it, is NULL)."""
        with self._lock, self._errors():
            self._check_open()
            present = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        select = ", ".join(c if c in present else f"NULL AS {c}" for c in RUN_COLUMNS)
        return self._frame(f"SELECT {select} FROM runs ORDER BY created_at, run_id")

    def _frame(self, query: str) -> pd.DataFrame:
        with self._lock, self._errors():
            self._check_open()
            cursor = self._conn.execute(query)
            names = [d[0] for d in cursor.description]
            rows = [tuple(r) for r in cursor.fetchall()]
        frame = pd.DataFrame.from_records(rows, columns=names)
        # NULL-able integer columns come back as float or object; give them a stable nullable dtype
        for column in ("ipc", "res", "seed", "peak_memory_bytes", "distill_peak_memory_bytes"):
            if column in frame:
                frame[column] = self._typed(frame[column], "Int64")
        for column in ("accuracy", "accuracy_max", "train_seconds", "eval_seconds", "distill_seconds",
                       "seconds_per_iteration"):  # fmt: skip
            if column in frame:
                frame[column] = self._typed(frame[column], "float64")
        if "spec_json" in frame:
            self._check_specs(frame["spec_json"])
        return frame

    def _check_specs(self, column: pd.Series) -> None:
        """Every stored spec is a JSON object (a hand edit could leave ``null`` or a list, which
        every reader would trip over)."""
        for text in column.dropna().unique():
            try:
                ok = isinstance(json.loads(text), dict)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise self._bad_row(f"a run's spec_json is {str(text)[:60]!r}, not a JSON object")

    def _typed(self, column: pd.Series, dtype: str) -> pd.Series:
        """``column`` as ``dtype``; a value that is not a number (a hand-edited row) is a corrupt store."""
        try:
            return column.astype(dtype)
        except (TypeError, ValueError):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column[numbers.isna() & column.notna()]
            value = bad.iloc[0] if len(bad) else column.iloc[0]
            raise self._bad_row(f"its column '{column.name}' holds {value!r}, not a number") from None


__all__ = [
    "ResultsStore",
    "store_path",
    "RESULTS_FILENAME",
    "SCHEMA_VERSION",
    "SCORE_COLUMNS",
    "RUN_COLUMNS",
    "FULL_DATA",
]
