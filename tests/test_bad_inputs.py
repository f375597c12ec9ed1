"""Bad input, one table: every case exits non-zero with one line that names the fix, no traceback,
and leaves the results store exactly as it was (issue 16).

Each case runs the CLI in this process (`ddbench.cli.main.main`) against its own copy of one tiny store
(Fashion-MNIST slice, ``real`` at IPC 1 and 2). Placeholders in a case's argv: ``{out}`` the store
copy, ``{tmp}`` a scratch folder, ``{slice}`` the Fashion-MNIST slice (12 training images per class),
``{ro}`` a read-only bind mount of a store copy.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ddbench.cli.main import main

# data and store ------------------------------------------------------------------------------

SLICE_RUN = ["--dataset", "fashion-mnist", "--data-root", "{slice}", "--algo", "real", "--iterations", "0",
             "--eval-epochs", "1", "--seeds", "1", "--no-progress"]  # fmt: skip


def _cli(argv: list[str]) -> int:
    """Exit status of ``ddbench ARGV`` run in this process."""
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    return 0


def store_digest(out: Path) -> str:
    """What a store holds: every file's content, except lock files and SQLite's shared-memory index
    (neither is data; an empty -wal is what a read-only open leaves beside a WAL database)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = path.name
        if name.endswith((".lock", ".open-lock", "-shm")) or (name.endswith("-wal") and path.stat().st_size == 0):
            continue
        digest.update(str(path.relative_to(out)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def built_store(fmnist_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "out"
    argv = ["run", *[a.replace("{slice}", str(fmnist_slice)) for a in SLICE_RUN], "--ipc", "1,2", "--out", str(out)]
    assert _cli(argv) == 0
    return out


@pytest.fixture(scope="session")
def read_only_store(built_store: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the store on a read-only bind mount (root ignores permission bits), or None."""
    base = tmp_path_factory.mktemp("ro")
    source, mount = base / "source", base / "mount"
    shutil.copytree(built_store, source / "out")
    (source / "empty").mkdir()
    mount.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(source), str(mount)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        yield None
        return
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], check=True, capture_output=True)
        yield mount
    except (OSError, subprocess.CalledProcessError):
        yield None
    finally:
        # lazy: a connection the process still holds must not leave the mount behind
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@dataclasses.dataclass
class Env:
    out: Path
    tmp: Path
    slice: Path
    ro: Path | None

    def fmt(self, arg: str) -> str:
        return arg.format(out=self.out, tmp=self.tmp, slice=self.slice, ro=self.ro)


# case setups: each makes one bad thing ---------------------------------------------------------


def _suite(body: str, name: str = "bad.toml") -> Callable[[Env], None]:
    def make(env: Env) -> None:
        (env.tmp / name).write_text(body)

    return make


GOOD_GRID = '[grid]\ndatasets = ["fashion-mnist"]\nmatchers = ["real"]\n'


def _suite_bytes(body: bytes, name: str = "bad.toml") -> Callable[[Env], None]:
    def make(env: Env) -> None:
        (env.tmp / name).write_bytes(body)

    return make


def _overwrite_page(env: Env) -> None:
    """One page of results.sqlite overwritten with noise (a disk error, a bad copy)."""
    path = env.out / "results.sqlite"
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[page : 2 * page] = bytes((i * 37 + 11) % 256 for i in range(page))
    path.write_bytes(bytes(data))


def _garbage_store(env: Env) -> None:
    (env.out / "results.sqlite").write_bytes(b"this is not a database" * 100)


def _edited_row(sql: str) -> Callable[[Env], None]:
    """One statement run on the store copy, as a hand edit or a foreign tool would."""

    def make(env: Env) -> None:
        # closed here, not when garbage collection gets to it: closing the last connection folds
        # the write-ahead log into the database, which must happen before the test's "before" digest
        conn = sqlite3.connect(env.out / "results.sqlite")
        try:
            with conn:
                conn.execute(sql)
        finally:
            conn.close()

    return make


def _foreign_store(env: Env) -> None:
    path = env.out / "results.sqlite"
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x)")


def _store_is_dir(env: Env) -> None:
    (env.tmp / "dirstore" / "results.sqlite").mkdir(parents=True)


def _empty_dir(name: str) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        (env.tmp / name).mkdir()

    return make


def _fmnist_copy(damage: Callable[[Path], None]) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        shutil.copytree(env.slice, env.tmp / "fm")
        damage(env.tmp / "fm")

    return make


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _wrong_magic(path: Path) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(b"\x00\x00\x09\x03" + b"\x00" * 64)


def _image_folder(
    classes: dict[str, int], test: dict[str, int] | None = None, corrupt: bool = False
) -> Callable[[Env], None]:
    """An image folder with ``classes`` (name → images), optionally pre-split with ``test``."""

    def make(env: Env) -> None:
        from PIL import Image

        root = env.tmp / "images"
        splits = {"train": classes, "test": test} if test is not None else {"": classes}
        for split, counts in splits.items():
            for name, n in counts.items():
                folder = root / split / name
                folder.mkdir(parents=True)
                for i in range(n):
                    Image.new("L", (10, 10), color=(i * 20 + len(name) * 40) % 256).save(folder / f"{i}.png")
        if corrupt:
            (root / next(iter(classes)) / "broken.png").write_bytes(b"\x89PNG not really")

    return make


def _state_file(content: Callable[[Path], None]) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        (env.tmp / "model").mkdir()
        content(env.tmp / "model" / "train_state.pt")

    return make


class _Cfg:
    """A plain object: what a Lightning checkpoint or a foreign state file carries besides tensors."""

    def __init__(self, x: int) -> None:
        self.x = x


def _fake_ckpt(env: Env) -> None:
    torch.save({"state_dict": {"x": torch.zeros(1)}, "callbacks": _Cfg(1)}, env.tmp / "model.ckpt")


# the table ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str  # in the error line: names the problem or its fix
    setup: Callable[[Env], None] | None = None
    lines: int | None = 1  # lines of the error (None: a list by design, e.g. where a dataset was looked for)
    xfail: str | None = None
    read_only: bool = False  # needs the read-only mount


def case(id: str, argv: str, expect: str, **kw) -> Case:
    return Case(id, tuple(argv.split()), expect, **kw)


RUN = "run --out {out} --dataset fashion-mnist --data-root {slice} --algo real --iterations 0 --eval-epochs 1 --seeds 1 --no-progress"
RUN_DM = RUN.replace("--algo real --iterations 0", "--algo dm --iterations 1")

CASES = [
    # unknown names
    case("unknown-prior", "run --out {out} --prior pixle", "Did you mean 'pixel'"),
    case("unknown-matcher", "run --out {out} --algo dn", "Did you mean 'dm'"),
    case("unknown-dataset", "run --out {out} --dataset fashion-mnst", "fashion-mnist"),
    case("unknown-evaluator", f"{RUN} --evaluators convnt", "convnet"),
    case("unknown-executor", f"{RUN} --executor lokal", "Did you mean 'local'"),
    case("unknown-suite", "run --out {out} --suite tabel1", "Did you mean 'table1'"),
    case("unknown-suite-leaderboard", "leaderboard --out {out} --suite tabel1", "Available suites"),
    case("unknown-protocol", f"{RUN} --protocol dcc", "dc"),
    case("prior-train-unknown-prior", "prior train pixel --out {tmp}/m", "trains the ld3m prior"),
    case("unknown-prior-command", "prior nosuch", "No such command"),
    case("unknown-command", "runn", "No such command"),
    # IPC
    case("ipc-not-a-number", f"{RUN} --ipc ten", "whole numbers for --ipc"),
    case("ipc-zero", f"{RUN} --ipc 0", "--ipc ≥ 1"),
    case("ipc-negative", f"{RUN} --ipc -3", "--ipc ≥ 1"),
    case("ipc-huge", f"{RUN} --ipc 100000", "training images of class 'T-shirt/top'"),
    case("ipc-above-class-size", f"{RUN} --ipc 13", "use --ipc 12 or less"),
    case("leaderboard-ipc-not-a-number", "leaderboard --out {out} --ipc abc", "whole numbers for --ipc"),
    case("leaderboard-ipc-not-recorded", "leaderboard --out {out} --ipc 7", "recorded values: 1, 2"),
    # option keys and values
    case("prior-opt-no-equals", f"{RUN} --prior-opt init", "KEY=VALUE"),
    case("prior-opt-unknown-key", f"{RUN} --prior-opt nosuch=1", "Accepted options"),
    case("algo-opt-unknown-key", f"{RUN} --algo-opt real.nosuch=1", "Accepted options"),
    case("algo-opt-foreign-scope", f"{RUN} --algo-opt mtt.syn_steps=5", "not among"),
    case("lr-no-equals", f"{RUN} --lr images", "KEY=VALUE"),
    case("exec-opt-unknown", f"{RUN} --exec-opt nosuch=1", "Accepted options"),
    case("slurm-option-for-local", f"{RUN} --exec-opt partition=gpu", "Accepted options"),
    case("algo-opt-bad-value", f"{RUN_DM} --algo-opt batch_real=abc", "batch_real"),
    case("lr-bad-value", f"{RUN_DM} --lr images=abc", "images"),
    *[case(f"lr-{value}", f"{RUN_DM} --lr images={value}", "finite number above 0") for value in ("nan", "inf", "0")],
    case("protocol-unknown-dry-run", f"{RUN} --protocol dcc --dry-run", "Did you mean 'dc'"),
    case("device-unknown", f"{RUN} --device tpu", "--device"),
    case("seeds-zero", f"{RUN} --seeds 0", "--seeds"),
    case("iterations-negative", f"{RUN} --iterations -1", "--iterations"),
    case("budget-unknown", f"{RUN} --budget huge", "--budget"),
    case("report-unknown", f"{RUN} --report best", "--report"),
    case("res-unsupported", f"{RUN} --res 64", "28 px"),
    case("res-unsupported-dry-run", f"{RUN} --res 64 --dry-run", "28 px"),
    case(
        "out-below-a-file-dry-run",
        f"{RUN.replace('--out {out}', '--out {tmp}/afile/sub')} --dry-run",
        "afile is a file",
        setup=lambda env: (env.tmp / "afile").write_text("x"),
    ),
    case("workers-zero", f"{RUN} --workers 0", "--workers"),
    case(
        "glad-stylegan-xl-untrusted",
        f"{RUN} --prior glad --prior-opt backend=stylegan-xl --prior-opt weights={{tmp}}/g.pkl "
        "--prior-opt stylegan_xl_src={tmp}",
        "glad.trust_pickle=true",
    ),
    # suite files
    case("suite-file-missing", "run --out {out} --suite {tmp}/missing.toml", "does not exist"),
    case("suite-not-toml", "run --out {out} --suite {tmp}/bad.toml", "not valid TOML", setup=_suite("name = [")),
    case(
        "suite-unknown-top-key",
        "run --out {out} --suite {tmp}/bad.toml",
        "unknown top-level keys",
        setup=_suite('version = 1\ncolour = "red"\n' + GOOD_GRID),
    ),
    case("suite-no-version", "run --out {out} --suite {tmp}/bad.toml", "'version'", setup=_suite(GOOD_GRID)),
    case("suite-is-a-directory", "run --out {out} --suite {tmp}", "is a directory"),
    case(
        "suite-not-utf8",
        "run --out {out} --suite {tmp}/bad.toml --dry-run",
        "not UTF-8",
        setup=_suite_bytes(b"# caf\xe9\nversion = 1\n" + GOOD_GRID.encode()),
    ),
    *[
        case(
            f"suite-{key}-wrong-type", "run --out {out} --suite {tmp}/bad.toml --dry-run", expect, setup=_suite(body)
        )  # fmt: skip
        for key, body, expect in (
            ("defaults", "version = 1\ndefaults = 5\n" + GOOD_GRID, "[defaults] as a table"),
            ("layout", "version = 1\nlayout = 5\n" + GOOD_GRID, "[layout] as a table"),
            ("budget", "version = 1\n" + GOOD_GRID + 'budget = ["demo"]\n', "'budget' as a name"),
            ("dsa", "version = 1\n" + GOOD_GRID + 'dsa = "no"\n', "'dsa' as true or false"),
            ("protocol", "version = 1\n" + GOOD_GRID + 'protocol = ["dc"]\n', "'protocol' as a name"),
            ("paper-table", "version = 1\n" + GOOD_GRID + "[layout]\npaper_table = 5\n", "paper_table as the name"),
            ("layout-rows", "version = 1\n" + GOOD_GRID + '[layout]\nrows = ["colour"]\n', "unknown [layout] rows"),
            ("ipcs-zero", "version = 1\n" + GOOD_GRID + "ipcs = [0]\n", "'ipcs' ≥ 1"),
            ("lr-nan", "version = 1\n" + GOOD_GRID + "[grid.lrs]\nimages = nan\n", "finite number above 0"),
        )
    ],
    case(
        "suite-filter-typo",
        "run --out {out} --suite {tmp}/bad.toml --prior pixle --dry-run",
        "did you mean 'pixel'",
        setup=_suite("version = 1\n" + GOOD_GRID),
    ),
    case(
        "suite-grid-typo",
        "run --out {out} --suite {tmp}/bad.toml",
        "Did you mean 'ipcs'",
        setup=_suite("version = 1\n" + GOOD_GRID + "ipc = [1]\n"),
    ),
    case(
        "suite-seeds-zero",
        "run --out {out} --suite {tmp}/bad.toml",
        "'seeds' ≥ 1",
        setup=_suite("version = 1\n" + GOOD_GRID + "seeds = 0\n"),
    ),
    case(
        "suite-iterations-negative",
        "run --out {out} --suite {tmp}/bad.toml",
        "≥ 0",
        setup=_suite("version = 1\n" + GOOD_GRID + "iterations = -5\n"),
    ),
    case(
        "suite-ipcs-not-numbers",
        "run --out {out} --suite {tmp}/bad.toml",
        "whole numbers",
        setup=_suite("version = 1\n" + GOOD_GRID + 'ipcs = ["one"]\n'),
    ),
    case(
        "suite-unknown-prior",
        "run --out {out} --suite {tmp}/bad.toml",
        "Did you mean 'pixel'",
        setup=_suite("version = 1\n" + GOOD_GRID + 'priors = ["pixle"]\n'),
    ),
    case(
        "suite-priors-not-names",
        "run --out {out} --suite {tmp}/bad.toml",
        "as names",
        setup=_suite("version = 1\n" + GOOD_GRID + "priors = [1]\n"),
    ),
    case(
        "suite-layout-columns",
        "run --out {out} --suite {tmp}/bad.toml",
        "[layout] columns",
        setup=_suite("version = 1\n" + GOOD_GRID + '[layout]\ncolumns = "seed"\n'),
    ),
    case(
        "suite-unset-variable",
        "run --out {out} --suite {tmp}/bad.toml",
        "export",
        setup=_suite("version = 1\n" + GOOD_GRID + '[grid.prior_options]\nweights = "${DDBENCH_NOT_SET_16}/g.pkl"\n'),
    ),
    case("suite-no-grid", "run --out {out} --suite {tmp}/bad.toml", "[grid]", setup=_suite("version = 1\n")),
    case(
        "suite-name-escapes",
        "leaderboard --out {out} --suite {tmp}/bad.toml --format html",
        "plain name",
        setup=_suite('name = "../../../../tmp/x/ESCAPED"\nversion = 1\n' + GOOD_GRID),
    ),
    case(
        "suite-name-slash",
        "run --out {out} --suite {tmp}/bad.toml --dry-run",
        "plain name",
        setup=_suite('name = "a/b"\nversion = 1\n' + GOOD_GRID),
    ),
    case(
        "suite-batch-real-not-a-number",
        "run --out {out} --suite {tmp}/bad.toml",
        "batch_real",
        setup=_suite(
            'version = 1\n[grid]\ndatasets = ["fashion-mnist"]\nmatchers = ["dm"]\n[grid.matcher_options]\nbatch_real = "lots"\n'
        ),
    ),
    case(
        "suite-lr-not-a-number",
        "run --out {out} --suite {tmp}/bad.toml",
        "images",
        setup=_suite("version = 1\n" + GOOD_GRID + '[grid.lrs]\nimages = "abc"\n'),
    ),
    case("suite-filter-matches-nothing", "run --out {out} --suite fmnist-cpu --ipc 7 --dry-run", "no run matching"),
    # missing and corrupt data
    case(
        "data-root-missing-cifar",
        f"{RUN.replace('fashion-mnist', 'cifar10').replace('{slice}', '{tmp}/nowhere')}",
        "was not found",
        lines=None,
    ),
    case(
        "data-root-empty-fmnist",
        f"{RUN.replace('{slice}', '{tmp}/empty')}",
        "was not found",
        setup=_empty_dir("empty"),
        lines=None,
    ),
    case("data-root-is-a-file", f"{RUN.replace('{slice}', '{tmp}/bad.toml')}", "--data-root", setup=_suite("x")),
    case(
        "fmnist-truncated",
        f"{RUN.replace('{slice}', '{tmp}/fm')}",
        "not a complete gzip file",
        setup=_fmnist_copy(lambda d: _truncate(d / "train-images-idx3-ubyte.gz")),
    ),
    case(
        "fmnist-wrong-magic",
        f"{RUN.replace('{slice}', '{tmp}/fm')}",
        "magic number",
        setup=_fmnist_copy(lambda d: _wrong_magic(d / "t10k-labels-idx1-ubyte.gz")),
    ),
    case(
        "image-folder-one-class",
        "run --out {out} --dataset image-folder --data-root {tmp}/images --algo real --iterations 0 "
        "--eval-epochs 1 --seeds 1 --no-progress",
        "at least 2 classes",
        setup=_image_folder({"only": 6}),
    ),
    case(
        "image-folder-class-without-test-images",
        "run --out {out} --dataset image-folder --data-root {tmp}/images --algo real "
        "--iterations 0 --eval-epochs 1 --seeds 1 --no-progress",
        "no test images of class(es) 'single'",
        setup=_image_folder({"many": 6, "single": 1}),
    ),
    case(
        "image-folder-ipc-above-class",
        "run --out {out} --dataset image-folder --data-root {tmp}/images --algo real "
        "--ipc 10 --iterations 0 --eval-epochs 1 --seeds 1 --no-progress",
        "training images of class 'few'",
        setup=_image_folder({"few": 3, "many": 20}, test={"few": 1, "many": 1}),
    ),
    case(
        "image-folder-empty-class",
        "run --out {out} --dataset image-folder --data-root {tmp}/images --algo real --no-progress",
        "holds no images",
        setup=_image_folder({"a": 3, "b": 0}),
    ),
    case(
        "image-folder-missing",
        "run --out {out} --dataset image-folder --data-root {tmp}/nowhere --algo real --no-progress",
        "was not found",
        lines=None,
    ),
    case(
        "image-folder-corrupt-image",
        "run --out {out} --dataset image-folder --data-root {tmp}/images --algo real "
        "--iterations 0 --eval-epochs 1 --seeds 1 --no-progress",
        "Replace or delete the file",
        setup=_image_folder({"a": 4, "b": 4}, corrupt=True),
    ),
    # corrupt store, checkpoint and model files
    case("store-garbage-leaderboard", "leaderboard --out {out}", "Move it aside", setup=_garbage_store),
    case("store-page-overwritten-leaderboard", "leaderboard --out {out}", "Move it aside", setup=_overwrite_page),
    case("store-page-overwritten-show", "show abc --out {out}", "Move it aside", setup=_overwrite_page),
    case("store-page-overwritten-run", f"{RUN} --ipc 1", "Move it aside", setup=_overwrite_page),
    case("store-foreign-database", "leaderboard --out {out}", "of something else", setup=_foreign_store),
    *[
        case(f"store-edited-{what}-{command}", f"{command} --out {{out}}", expect, setup=_edited_row(sql))
        for what, sql, expect in (
            ("accuracy", "UPDATE scores SET accuracy = 'high'", "column 'accuracy' holds 'high'"),
            ("seed", "UPDATE scores SET seed = 'zero'", "column 'seed' holds 'zero'"),
            ("spec-bytes", "UPDATE runs SET spec_json = CAST(X'80FF' AS TEXT)", "Move it aside"),
            ("spec-null", "UPDATE runs SET spec_json = 'null'", "spec_json is 'null', not a JSON object"),
        )
        for command in ("leaderboard", "runs")
    ],
    case("store-path-is-a-directory", "leaderboard --out {tmp}/dirstore", "is a directory", setup=_store_is_dir),
    case(
        "train-state-garbage",
        "prior train ld3m --out {tmp}/model --data-root {slice} --ae-steps 1 --diffusion-steps 1 --no-progress",
        "Delete it to train from the start",
        setup=_state_file(lambda p: p.write_bytes(b"\x80\x04garbage")),
    ),
    case(
        "train-state-missing-keys",
        "prior train ld3m --out {tmp}/model --data-root {slice} --ae-steps 1 --diffusion-steps 1 --no-progress",
        "lacks",
        setup=_state_file(lambda p: torch.save({"stage": "ae"}, p)),
    ),
    case(
        "train-state-with-objects",
        "prior train ld3m --out {tmp}/model --data-root {slice} --ae-steps 1 --diffusion-steps 1 --no-progress",
        "more than tensors",
        setup=_state_file(lambda p: torch.save({"cfg": _Cfg(1)}, p)),
    ),
    case(
        "convert-ldm-pickle-untrusted",
        "prior convert-ldm {tmp}/model.ckpt {tmp}/converted",
        "--trust-checkpoint",
        setup=_fake_ckpt,
    ),
    case("convert-ldm-missing", "prior convert-ldm {tmp}/missing.ckpt {tmp}/converted", "No checkpoint at"),
    # the store and its commands
    case("show-missing-store", "show abc --out {tmp}/nostore", "No results store"),
    case("show-unknown-run", "show zzzz --out {out}", "matches no run"),
    case("leaderboard-missing-store", "leaderboard --out {tmp}/nostore", "No results store"),
    case("leaderboard-compare-without-suite", "leaderboard --out {out} --compare paper", "needs --suite"),
    case(
        "leaderboard-output-is-the-store",
        "leaderboard --out {out} --format markdown --output {out}/results.sqlite",
        "is the results store",
    ),
    case(
        "leaderboard-output-is-the-suite",
        "leaderboard --out {out} --suite {tmp}/bad.toml --format markdown --output {tmp}/bad.toml",
        "is the suite file",
        setup=_suite("version = 1\n" + GOOD_GRID),
    ),
    case("leaderboard-columns-unknown", "leaderboard --out {out} --columns colour", "'colour' is not one of"),
    case("leaderboard-rows-empty", "leaderboard --out {out} --rows ,", "--rows needs at least one key"),
    case("leaderboard-unknown-row", "leaderboard --out {out} --rows prior,colour", "colour"),
    case("leaderboard-unknown-format", "leaderboard --out {out} --format xml", "--format"),
    case("leaderboard-filter-no-match", "leaderboard --out {out} --dataset cifar10", "recorded values: fashion-mnist"),
    # read-only locations
    case(
        "run-into-read-only-out",
        f"{RUN.replace('--out {out}', '--out {ro}/empty')}",
        "read-only file system",
        read_only=True,
    ),
    case(
        "run-below-read-only-out",
        f"{RUN.replace('--out {out}', '--out {ro}/empty/new')}",
        "read-only file system",
        read_only=True,
    ),
    case(
        "run-into-read-only-store",
        f"{RUN.replace('--out {out}', '--out {ro}/out')} --ipc 3",
        "read-only file system",
        read_only=True,
    ),
    case(
        "leaderboard-output-read-only",
        "leaderboard --out {out} --format markdown --output {ro}/empty/board.md",
        "read-only file system",
        read_only=True,
    ),
    case(
        "leaderboard-html-into-read-only-out",
        "leaderboard --out {ro}/out --format html",
        "read-only file system",
        read_only=True,
    ),
]


@pytest.fixture
def env(request, tmp_path: Path, built_store: Path, fmnist_slice: Path, read_only_store) -> Env:
    out = tmp_path / "out"
    shutil.copytree(built_store, out)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Env(out=out, tmp=scratch, slice=fmnist_slice, ro=read_only_store)


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(reason=c.xfail, strict=False)] if c.xfail else []
        yield pytest.param(c, id=c.id, marks=marks)


def test_cases_are_many_and_distinct():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", list(_params()))
def test_bad_input_is_one_line_and_changes_nothing(bad: Case, env: Env, capsys, monkeypatch):
    if bad.read_only and env.ro is None:
        pytest.skip("needs a read-only bind mount (mount --bind as root)")
    monkeypatch.delenv("DDBENCH_NOT_SET_16", raising=False)
    if bad.setup is not None:
        bad.setup(env)
    watched = [env.out] + ([env.ro / "out"] if bad.read_only else [])
    before = [store_digest(d) for d in watched]
    capsys.readouterr()
    code = _cli([env.fmt(a) for a in bad.argv])
    out, err = capsys.readouterr()
    assert code != 0, f"exit 0 for a bad input; stderr: {err[-2000:]}"
    assert "Traceback" not in err + out, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.lower().startswith("error:")]
    assert starts, f"no 'error:' line in: {err[-2000:]}"
    message = lines[starts[-1] :]
    if bad.lines is not None:
        assert len(message) == bad.lines, message
    assert bad.expect in " ".join(message), message
    assert [store_digest(d) for d in watched] == before, "the store changed"


# what the same bad situations must still allow ---------------------------------------------------


def test_default_leaderboard_groups_several_ipcs(env: Env, capsys):
    # the README's workflow (--ipc 1,10) then a plain `ddbench leaderboard`: rendered, grouped by IPC
    assert _cli(["leaderboard", "--out", str(env.out), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    header, *rows = [line for line in out.splitlines() if line]
    assert header.startswith("prior,matcher,ipc,") and [r.split(",")[2] for r in rows] == ["1", "2"]


def test_markdown_escapes_pipes_and_html_in_labels():
    import pandas as pd

    from ddbench.results.leaderboard import leaderboard_table, to_markdown

    frame = pd.DataFrame({"dataset": ["d"] * 2, "prior": ["a|b", "<script>x</script>"], "matcher": ["dm"] * 2,
                          "evaluator": ["convnet"] * 2, "seed": [0, 0], "accuracy": [0.5, 0.6]})  # fmt: skip
    text = to_markdown(leaderboard_table(frame))
    assert "<script>" not in text and "&lt;script&gt;" in text and "a\\|b" in text
    # every line has the same number of unescaped cell separators
    assert len({line.replace("\\|", "").count("|") for line in text.splitlines()}) == 1


def test_readers_work_on_a_read_only_store_and_write_nothing(read_only_store, capsys):
    if read_only_store is None:
        pytest.skip("needs a read-only bind mount (mount --bind as root)")
    out = read_only_store / "out"
    files = sorted(p.name for p in out.rglob("*"))
    assert _cli(["leaderboard", "--out", str(out)]) == 0
    assert (
        _cli(["leaderboard", "--out", str(out), "--format", "markdown", "--dataset", "fashion-mnist", "--ipc", "1"])
        == 0
    )
    run_id = next((out / "runs" / "fashion-mnist").iterdir()).name.rsplit("-", 1)[-1]
    assert _cli(["show", run_id[:8], "--out", str(out)]) == 0
    assert "grid.png" in capsys.readouterr().out
    assert sorted(p.name for p in out.rglob("*")) == files


def test_show_and_leaderboard_never_create_a_store(tmp_path):
    missing = tmp_path / "nowhere"
    assert _cli(["show", "abc", "--out", str(missing)]) == 2
    assert _cli(["leaderboard", "--out", str(missing)]) == 2
    assert not missing.exists()


def test_readers_leave_no_lock_file(env: Env):
    for name in ("results.sqlite.open-lock",):
        (env.out / name).unlink(missing_ok=True)
    assert _cli(["leaderboard", "--out", str(env.out)]) == 0
    assert not (env.out / "results.sqlite.open-lock").exists()


@pytest.mark.parametrize("damage", ["tensors-without-images", "metadata-not-an-object"])
def test_a_damaged_synthetic_set_is_a_clear_error_and_the_run_redistils(damage, env: Env, capsys):
    from safetensors.torch import load_file, save_file

    from ddbench.engine.synthetic import METADATA_FILE, TENSORS_FILE, SyntheticSet
    from ddbench.errors import CorruptFileError

    run_dir = next(d for d in (env.out / "runs" / "fashion-mnist").iterdir() if "-ipc1-" in d.name)
    if damage == "tensors-without-images":
        tensors = load_file(str(run_dir / TENSORS_FILE))
        tensors.pop("images")
        save_file(tensors, str(run_dir / TENSORS_FILE))
    else:
        (run_dir / METADATA_FILE).write_text("[1, 2, 3]")
    with pytest.raises(CorruptFileError, match="run again"):
        SyntheticSet.load(run_dir)
    # one more seed than stored, so the run has work to do: a complete run is skipped from the
    # store's record alone (ddbench.running.run_state) without opening its set
    argv = ["run", *[env.fmt(a) for a in SLICE_RUN], "--ipc", "1", "--seeds", "2", "--out", str(env.out)]
    assert _cli(argv) == 0
    assert "distilling again" in capsys.readouterr().err
    SyntheticSet.load(run_dir)  # repaired


def test_every_run_file_has_one_mode(built_store: Path):
    run_dir = next((built_store / "runs" / "fashion-mnist").iterdir())
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_dir.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes


def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_numbers(env: Env, capsys, monkeypatch):
    from ddbench.running import preflight

    monkeypatch.setattr(preflight, "available_bytes", lambda device: 64 * 2**20)
    before = store_digest(env.out)
    argv = ["run", *[env.fmt(a) for a in SLICE_RUN], "--algo", "dm", "--ipc", "3", "--out", str(env.out)]
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "64.00 MiB free" in err and "lower --ipc" in err
    assert store_digest(env.out) == before
