"""The `ddbench` command line (click). Every command is a thin layer over the library."""

from __future__ import annotations

import difflib
import errno
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ddbench import __version__, registry
from ddbench.cli._completion import plugin_names, suite_names
from ddbench.cli._entry_commands import EntryPointGroup
from ddbench.cli._signals import SIGTERM_EXIT_CODE, Terminated, sigterm_interrupts
from ddbench.engine.spec import BUDGETS, RunEnv, RunSpec
from ddbench.errors import DDBenchError, InvalidOptionError, PluginLoadError

# option helpers shared with suite files (one expansion of options into RunSpecs); re-exported here
from ddbench.running.grid import (  # noqa: F401 - DEFAULT_DATASET, PAPER_DATASETS, parse_key_values: re-exported (imported from here elsewhere)
    DEFAULT_DATASET,
    PAPER_DATASETS,
    SpecGrid,
    build_specs,
    check_names as _check_names,
    expand_evaluators,
    parse_key_values,
    parse_lrs,
    split_values as _split,
)
from ddbench.util._console import stderr_console
from ddbench.util.click_options import data_and_device_options, eval_batch_option
from ddbench.util.fileio import check_dir_could_be_made, check_writable_dir, describe_os_error, safe_name

if TYPE_CHECKING:  # imported when needed: `ddbench --help` stays fast
    from ddbench.running.sweep import PlannedRun

console = stderr_console()


def _ints(values: Iterable[str], option: str) -> list[int]:
    try:
        return [int(v) for v in _split(values)]
    except ValueError:
        raise InvalidOptionError(f"Expected whole numbers for {option} but got {list(values)}") from None


def _default_datasets(data_root: str | None) -> list[str]:
    """The paper's datasets whose data is present; Fashion-MNIST when none is."""
    present, missing = [], []
    installed = registry.plugin_names("dataset")
    for name in PAPER_DATASETS:
        if name not in installed:
            continue
        ok, _ = registry.create("dataset", name).available(data_root)
        (present if ok else missing).append(name)
    if not present:
        console.print(
            f"[yellow]None of the paper's datasets is on disk; using {DEFAULT_DATASET}.[/] "
            "[dim](--dataset NAME picks one; `ddbench run --dataset NAME` says where it looks)",
            highlight=False,
        )
        return [DEFAULT_DATASET]
    if missing:
        console.print(f"[dim]not on disk, skipped: {', '.join(missing)}", highlight=False)
    return present


# --------------------------------------------------------------------------------------- main


@click.group(
    cls=EntryPointGroup, entry_point_group="ddbench.commands", context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="ddbench")
def cli() -> None:
    """Dataset distillation benchmark: priors × matchers × evaluators, one engine."""


@cli.command()
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    shell_complete=plugin_names("dataset"),
    help="Dataset name(s); comma-separated or repeated. Default: the paper's datasets on disk, else fashion-mnist.",
)
@click.option(
    "--prior",
    "priors",
    multiple=True,
    default=("pixel",),
    show_default=True,
    shell_complete=plugin_names("prior"),
    help="Prior name(s); `ddbench plugins` lists them.",
)
@click.option(
    "--algo",
    "matchers",
    multiple=True,
    default=("dm",),
    show_default=True,
    shell_complete=plugin_names("matcher"),
    help="Matcher name(s); `ddbench plugins` lists them.",
)
@click.option(
    "--ipc",
    "ipcs",
    multiple=True,
    default=("1",),
    show_default=True,
    help="Images per class; several build the cross product.",
)
@click.option(
    "--evaluators",
    "evaluators",
    multiple=True,
    default=("convnet",),
    show_default=True,
    shell_complete=plugin_names("evaluator", "unseen"),
    help="Evaluator names; 'unseen' = alexnet,vgg11,resnet18,vit.",
)
@click.option(
    "--seeds", type=click.IntRange(min=1), default=None, help="Number of evaluation seeds (0..N-1). [default: 3]"
)
@click.option("--seed", "distill_seed", type=int, default=0, show_default=True, help="Distillation seed.")
@click.option("--iterations", type=click.IntRange(min=0), default=None, help="Distillation iterations. [default: 1000]")
@click.option(
    "--eval-epochs", type=click.IntRange(min=1), default=None, help="Override the protocol's training epochs."
)
@click.option("--protocol", default="dc", show_default=True, help="Evaluation protocol: dc, dc-noaug or glad.")
@click.option(
    "--report",
    type=click.Choice(["final", "max"]),
    default="final",
    show_default=True,
    help="'max' = best test accuracy over training (GLaD's selection on the test set; labelled).",
)
@click.option("--res", type=int, default=None, help="Image resolution (ImageNet subsets: 128 or 256).")
@click.option(
    "--lr", "lrs", multiple=True, help="Learning-rate override for a learnable tensor, NAME=VALUE (e.g. images=0.5)."
)
@click.option(
    "--prior-opt",
    "prior_opts",
    multiple=True,
    help="Prior option KEY=VALUE (repeatable); NAME.KEY=VALUE applies to prior NAME only.",
)
@click.option(
    "--algo-opt",
    "matcher_opts",
    multiple=True,
    help="Matcher option KEY=VALUE (repeatable); NAME.KEY=VALUE applies to matcher NAME only (e.g. dm.batch_real=64).",
)
@click.option("--no-dsa", is_flag=True, help="Distil without differentiable siamese augmentation.")
@click.option(
    "--budget",
    type=click.Choice(sorted(BUDGETS)),
    default=None,
    help="Preset: smoke (seconds), demo (~10 min on 2 cores), paper (protocol defaults).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory (results.sqlite, runs/).",
)
@data_and_device_options
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Checkpoint every N iterations.",
)
@click.option(
    "--resume/--no-resume", default=True, show_default=True, help="Continue interrupted runs from their checkpoints."
)
@click.option("--force", is_flag=True, help="Recompute even if the store already has this spec's results.")
@eval_batch_option
@click.option(
    "--soft-labels",
    "soft_labels",
    metavar="teacher[:ARCH]",
    default=None,
    help="Evaluate on the soft labels of a teacher (an evaluator, default convnet) trained on the real training split and cached in --out; scores are keyed e.g. dc[soft=ce,teacher=convnet:2ep].",
)
@click.option(
    "--teacher-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs the teacher trains on the real training split. [default: 2]",
)
@click.option(
    "--soft-loss",
    type=click.Choice(["ce", "kl"]),
    default=None,
    help="Loss on teacher soft labels: soft cross-entropy, or KL divergence at --temperature. [default: ce]",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Temperature of --soft-loss kl. [default: 4]",
)
@click.option(
    "--tensorboard",
    is_flag=True,
    help="Also log each run's per-iteration metrics (metrics.jsonl) as TensorBoard events in its run directory; needs ddbench[tensorboard].",
)
@click.option(
    "--suite",
    default=None,
    shell_complete=suite_names(),
    help="Run a suite (table1 … table4, fmnist-cpu, table4-fmnist, table7-fmnist, or a suite .toml path); --dataset/--prior/--algo/--ipc then select among its runs and other options override it.",
)
@click.option(
    "--dry-run", is_flag=True, help="List the runs, what the store already has and their estimated cost; run nothing."
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    shell_complete=plugin_names("executor"),
    help="Where runs execute: an executor plugin (`ddbench plugins` lists them).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Runs at once (the executor's `workers` option). [default: 1]",
)
@click.option(
    "--exec-opt",
    "exec_opts",
    multiple=True,
    help="Option KEY=VALUE of the executor plugin, repeatable (see its docstring), e.g. partition=gpu.",
)
def run(**opts: Any) -> None:
    """Distil and evaluate the cross product datasets × priors × algos × IPCs, or a suite.

    \b
    Examples:
      ddbench run --dataset fashion-mnist --prior pixel --algo dm --ipc 1,10 --budget demo
      ddbench run --suite fmnist-cpu --workers 2
      ddbench run --suite table4-fmnist --dry-run
      ddbench run --suite table2 --prior-opt glad.trust_pickle=true --executor slurm --exec-opt partition=gpu

    Every run goes through the executor: it claims the run (a lock), logs to the run's run.log and
    records a failure in the store without stopping the others; what the store already has is skipped.
    """
    from ddbench.running.identity import resolve_specs
    from ddbench.running.pipeline import resolve_device

    given = _given_options(opts)
    resolve_device(opts["device"])  # a typo in --device fails before any data loads
    if opts["tensorboard"]:
        from ddbench.engine.metrics import check_tensorboard

        check_tensorboard()
    grid = _grid_from_options(opts)
    if opts["suite"]:
        specs = _suite_specs(opts["suite"], grid, given, require_env=not opts["dry_run"])
    else:
        if not grid.datasets:
            # names first, so a typo fails before the data search prints anything
            _check_names("prior", grid.priors)
            _check_names("matcher", grid.matchers)
            grid.datasets = _default_datasets(opts["data_root"])
        specs = build_specs(grid)
    env = _run_env(opts)
    specs = _with_soft_labels(specs, opts)
    # the one place where specs become runs: their ids now hash what will run (ddbench.running.identity)
    specs = resolve_specs(specs, env)
    specs = _meaningful_runs(specs, from_suite=bool(opts["suite"]))
    if opts["dry_run"]:
        check_dir_could_be_made(env.out, "--out")  # what a real run would refuse first
    else:
        _check_before_running(specs, env, opts)
        _print_preview(_plan(specs, env), opts, env)
    _run_sweep(specs, env, opts)


def _given_options(opts: Mapping[str, Any]) -> set[str]:
    """The options of the running command that the command line gave (not defaults)."""
    ctx = click.get_current_context()
    return {
        name
        for name in opts
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    }


def _run_env(opts: Mapping[str, Any]) -> RunEnv:
    return RunEnv(
        out=opts["out"],
        data_root=opts["data_root"],
        device=opts["device"],
        download=opts["download"],
        checkpoint_every=opts["checkpoint_every"],
        resume=opts["resume"],
        force=opts["force"],
        progress=opts["progress"],
        tensorboard=opts["tensorboard"],
        eval_batch=opts["eval_batch"],
    )


def _check_before_running(specs: list[RunSpec], env: RunEnv, opts: Mapping[str, Any]) -> None:
    """Fail on an unwritable --out, absent data or (runs in this process) bad input, before any run is claimed."""
    check_writable_dir(env.out, "--out")
    if not env.download:
        from ddbench.running.preflight import check_data_present

        check_data_present(specs, env)  # one line for absent data, before any run is claimed
    if (opts["workers"] or 1) == 1 and not opts["suite"]:
        from ddbench.running.pipeline import check_runnable

        check_runnable(specs, env)  # this process runs them: bad input fails before the store is touched


def _with_soft_labels(specs: list[RunSpec], opts: dict[str, Any]) -> list[RunSpec]:
    """``--soft-labels teacher[:ARCH]``: evaluation on a teacher's soft labels (the run ids stay: only
    the protocol changes); the teacher trains on the run's training data (a smoke run's slice)."""
    import dataclasses

    from ddbench.engine.soft_labels import teacher_soft_labels

    if opts["soft_labels"] is None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("teacher_epochs", "soft_loss", "temperature")
            if opts[name] is not None
        ]
        if given:
            raise InvalidOptionError(
                f"{', '.join(given)} applies to --soft-labels teacher only; add --soft-labels teacher or leave it out"
            )
        return specs
    if opts["temperature"] is not None and opts["soft_loss"] != "kl":
        raise InvalidOptionError("--temperature applies to --soft-loss kl only; add --soft-loss kl or leave it out")
    _check_names("evaluator", [teacher_soft_labels(opts["soft_labels"], opts["soft_loss"], None, None).teacher.arch])  # type: ignore[union-attr]
    return [
        dataclasses.replace(
            spec,
            soft_labels=teacher_soft_labels(
                opts["soft_labels"],
                opts["soft_loss"],
                opts["temperature"],
                opts["teacher_epochs"],
                spec.train_per_class,
            ).to_dict(),
        )  # fmt: skip
        for spec in specs
    ]


def _meaningful_runs(specs: list[RunSpec], from_suite: bool) -> list[RunSpec]:
    """Runs whose rows would mislead (a random-real baseline that starts from no real image,
    `ddbench.results.baselines`): a cross product skips them, saying why, and refuses when nothing is left;
    a suite keeps them, its author chose them, and its report marks their cells."""
    from ddbench.results.baselines import fix_hint, split_meaningful

    kept, dropped = split_meaningful(specs)
    if not dropped:
        return specs
    if not kept:
        spec, problem = dropped[0]
        raise InvalidOptionError(f"{spec.label}: {problem}; {fix_hint(spec.prior)}")
    for spec, problem in dropped:
        verb = "kept, its report cells marked ‡" if from_suite else "skipped"
        console.print(f"[yellow]{verb}: {escape(spec.label)}: {escape(problem)}", highlight=False)
    return specs if from_suite else kept


#: the command line `main` was given (None when click is driven directly, e.g. by CliRunner)
_ARGV: list[str] | None = None


def _print_preview(planned: list[PlannedRun], opts: dict[str, Any], env: RunEnv) -> None:
    """Before anything starts: what will run, its estimated time here, and a shorter command."""
    from ddbench.results.report import prior_label, recorded_labels
    from ddbench.running.preview import preview_lines

    argv = _ARGV or [
        "run",
        "--prior",
        ",".join(_split(opts["priors"])),
        "--algo",
        ",".join(_split(opts["matchers"])),
        "--ipc",
        ",".join(_split(opts["ipcs"])),
    ]
    specs = [p.spec for p in planned]
    labels = [prior_label(s.prior, s.plugin_options("prior"), recorded_labels(s.to_dict()), s.lrs) for s in specs]
    workers = opts.get("workers") or 1
    for line in preview_lines(planned, labels, argv, opts["budget"], workers=workers, cache_dir=env.cache_dir):
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # labels hold [..]


def _plan(specs: list[RunSpec], env: RunEnv) -> list[PlannedRun]:
    """`plan_sweep` against the store under ``--out`` (read only; none yet: everything is new)."""
    from ddbench.results.store import ResultsStore, store_path
    from ddbench.running.sweep import plan_sweep

    path = store_path(env.out)
    if not path.exists():
        return plan_sweep(specs, env, None)
    with ResultsStore(path, read_only=True) as store:
        return plan_sweep(specs, env, store)


#: `ddbench run` options → SpecGrid keys (the names suite files use)
_GRID_OPTIONS = {
    "datasets": "datasets", "priors": "priors", "matchers": "matchers", "ipcs": "ipcs",
    "evaluators": "evaluators", "seeds": "seeds", "distill_seed": "seed", "iterations": "iterations",
    "eval_epochs": "eval_epochs", "protocol": "protocol", "report": "report", "res": "res", "lrs": "lrs",
    "prior_opts": "prior_options", "matcher_opts": "matcher_options",
    "no_dsa": "dsa", "budget": "budget",
}  # fmt: skip


def _grid_from_options(opts: dict[str, Any]) -> SpecGrid:
    return SpecGrid(
        datasets=_split(opts["datasets"]),
        priors=_split(opts["priors"]),
        matchers=_split(opts["matchers"]),
        ipcs=_ints(opts["ipcs"], "--ipc"),
        evaluators=_split(opts["evaluators"]),
        seeds=opts["seeds"],
        seed=opts["distill_seed"],
        iterations=opts["iterations"],
        eval_epochs=opts["eval_epochs"],
        protocol=opts["protocol"],
        report=opts["report"],
        res=opts["res"],
        lrs=parse_lrs(parse_key_values(opts["lrs"], "--lr"), "--lr"),
        prior_options=parse_key_values(opts["prior_opts"], "--prior-opt"),
        matcher_options=parse_key_values(opts["matcher_opts"], "--algo-opt"),
        dsa=not opts["no_dsa"],
        budget=opts["budget"],
    )


def _suite_specs(name: str, grid: SpecGrid, given: set[str], require_env: bool) -> list[RunSpec]:
    """A suite's specs: options given on the command line override it; --dataset/--prior/--algo/--ipc select."""
    from ddbench.running.suites import FILTER_KEYS, load_suite

    suite = load_suite(name)
    keys = {_GRID_OPTIONS[o] for o in given if o in _GRID_OPTIONS}
    overrides = {k: getattr(grid, k) for k in keys if k not in FILTER_KEYS}
    filters = {k: getattr(grid, k) for k in keys if k in FILTER_KEYS}
    console.print(f"suite {suite.name} v{suite.version} ({suite.path})")
    return suite.specs(overrides=overrides, filters=filters, require_env=require_env)


def _executor(opts: dict[str, Any]) -> Any:
    options = parse_key_values(opts["exec_opts"], "--exec-opt")
    if opts["workers"] is not None:
        options["workers"] = opts["workers"]
    _check_names("executor", [opts["executor"]])
    return registry.create("executor", opts["executor"], **options)


def _run_sweep(specs: list[RunSpec], env: RunEnv, opts: dict[str, Any]) -> None:
    """Every `ddbench run`: skip what the store has, resume, run through an executor, never stop on a failure."""
    from ddbench.results.store import ResultsStore, store_path
    from ddbench.running.sweep import print_plan, run_sweep

    executor = _executor(opts)
    workers = opts["workers"] or 1
    if opts["dry_run"]:
        print_plan(_plan(specs, env), console, workers=workers)
        return
    summary = run_sweep(specs, env, executor, console, workers=workers)
    with ResultsStore(store_path(env.out)) as store:
        scores = store.scores_frame()
    # only runs with scores: a run that failed before its first score has its own line below
    scored = set(scores["run_id"])
    shown = [s.run_id for s in specs if s.run_id in scored]
    if shown:
        _print_leaderboard(
            scores,
            fmt="rich",
            rows=("prior", "matcher", "ipc"),
            columns="dataset",
            filters={"run_id": shown, "protocol": sorted({s.protocol_key() for s in specs})},
        )
    if summary.failed:
        for run_id, error in summary.failed.items():
            console.print(f"[red]failed[/] {run_id}: {error}", highlight=False)
        console.print(
            f"[red]{len(summary.failed)} run(s) failed[/]; their errors are in the store (`ddbench show RUN_ID`) and their logs. Run the same command again to retry them."
        )
        raise click.exceptions.Exit(1)


def _print_leaderboard(
    scores: Any, fmt: str, rows: tuple[str, ...], columns: str, filters: dict[str, Any] | None
) -> None:
    """``scores`` (`ResultsStore.scores_frame`, not empty) as a leaderboard, with its marks' notes."""
    from ddbench.results.leaderboard import leaderboard_table
    from ddbench.results.report.rows import with_prior_variants

    _render_marked(leaderboard_table(with_prior_variants(scores), rows=rows, columns=columns, filters=filters), fmt)


def _render_marked(table: Any, fmt: str) -> None:
    """Print ``table`` in ``fmt``, then a line per mark its cells carry (what † ‡ § mean there)."""
    from ddbench.results.leaderboard import mark_notes, render

    render(table, fmt)
    for note in mark_notes(table):
        console.print(f"[dim]{escape(note)}", highlight=False)


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory holding results.sqlite.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rich", "markdown", "latex", "csv", "html"]),
    default="rich",
    show_default=True,
    help="html: one self-contained page with every table and each run's image grid.",
)
@click.option(
    "--suite",
    default=None,
    shell_complete=suite_names(),
    help="Show a suite in its layout (table1 … table4 as the paper's tables, fmnist-cpu, table4-fmnist, table7-fmnist, or a suite .toml path; replaces --rows/--columns); see `ddbench run --suite`.",
)
@click.option(
    "--compare",
    type=click.Choice(["paper"]),
    default=None,
    help="Beside each column, the paper's published number and the difference (ours − paper); needs --suite of a paper table.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of the terminal. [html default: OUT/report.html or OUT/report-SUITE.html]",
)
@click.option(
    "--rows",
    default="prior,matcher",
    show_default=True,
    help="Row keys (comma-separated): prior, matcher, ipc, dataset, evaluator.",
)
@click.option(
    "--columns",
    type=click.Choice(["dataset", "evaluator"]),
    default="dataset",
    show_default=True,
    help="Column key: dataset or evaluator (one column per architecture, with their average).",
)
@click.option(
    "--dataset", "datasets", multiple=True, shell_complete=plugin_names("dataset"), help="Only these datasets."
)
@click.option("--ipc", "ipcs", multiple=True, help="Only these IPCs.")
@click.option(
    "--evaluators",
    "evaluators",
    multiple=True,
    shell_complete=plugin_names("evaluator", "unseen"),
    help="Only these evaluators ('unseen' = the four unseen architectures).",
)
@click.option(
    "--protocol", "protocols", multiple=True, help="Only these evaluation protocols, e.g. dc or 'dc[epochs=300]'."
)
@click.option(
    "--reference",
    is_flag=True,
    help="One row per run × evaluator × protocol with the gap to the full-data baseline (HLR), the gain over random real images at the same IPC (IOR) and DD-Ranking's combined score.",
)
@click.option(
    "--ddrs-weight",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="--reference: the weight w of IOR in the DD-Ranking score (1 − w on HLR).",
)
def leaderboard(
    out: Path,
    fmt: str,
    suite: str | None,
    compare: str | None,
    output: Path | None,
    rows: str,
    columns: str,
    datasets: tuple[str, ...],
    ipcs: tuple[str, ...],
    evaluators: tuple[str, ...],
    protocols: tuple[str, ...],
    reference: bool,
    ddrs_weight: float,
) -> None:
    """Mean ± std over seeds of every stored score, as a pivot table.

    \b
    Examples:
      ddbench leaderboard --format markdown
      ddbench leaderboard --reference --ipc 10
      ddbench leaderboard --suite table1 --compare paper
      ddbench leaderboard --suite table2 --format html --output table2.html
    """
    from ddbench.results.leaderboard import grouping_rows
    from ddbench.results.store import ResultsStore, store_path

    path = store_path(out)
    if not path.exists():
        raise InvalidOptionError(f"No results store at {path}; run `ddbench run --out {out}` first or pass --out.")
    if output is not None:
        check_writable_dir(output.parent, "--output")
        _check_output_is_no_input(output, path, suite)
    filters = _leaderboard_filters(datasets, ipcs, evaluators, protocols)
    if compare and suite is None:
        raise InvalidOptionError(
            "--compare paper needs --suite NAME, a suite of one of the paper's tables (e.g. --suite table1)"
        )
    # a reader writes nothing: no lock file, no schema, and it works on a read-only copy of a store
    with ResultsStore(path, read_only=True) as store:
        scores, runs = store.scores_frame(), store.runs_frame()
    if reference:
        return _reference_leaderboard(scores, filters or None, fmt, suite, output, ddrs_weight)
    row_keys = tuple(_split([rows]))
    if not row_keys:
        raise InvalidOptionError("--rows needs at least one key, e.g. --rows prior,matcher")
    if click.get_current_context().get_parameter_source("rows") == ParameterSource.DEFAULT:
        # the default view groups what it would otherwise refuse to mix (several IPCs, resolutions, …)
        row_keys = grouping_rows(_filtered(scores, filters or None), row_keys, columns)
    if suite is None and fmt != "html" and output is None:
        if scores.empty:
            console.print("[yellow]The store has no scores yet; run `ddbench run` first.")
            return
        _print_leaderboard(scores, fmt, row_keys, columns, filters or None)
        return
    _leaderboard_report(out, scores, runs, fmt, suite, compare == "paper", output, row_keys, columns, filters or None)


def _check_output_is_no_input(output: Path, store: Path, suite: str | None) -> None:
    """``--output`` must not overwrite what the leaderboard reads: the store (or its journal files) or
    the suite file."""
    inputs = [(store.with_name(store.name + suffix), "the results store") for suffix in ("", "-wal", "-shm")]
    if suite is not None and Path(suite).is_file():
        inputs.append((Path(suite), "the suite file"))
    for source, what in inputs:
        same = output.exists() and source.exists() and output.samefile(source)
        if same or output.resolve() == source.resolve():
            raise InvalidOptionError(f"--output {output} is {what} the leaderboard reads; write to another file")


def _leaderboard_filters(
    datasets: tuple[str, ...], ipcs: tuple[str, ...], evaluators: tuple[str, ...], protocols: tuple[str, ...]
) -> dict[str, Any]:
    """The score filters of `ddbench leaderboard`'s --dataset, --ipc, --evaluators and --protocol."""
    filters: dict[str, Any] = {}
    if datasets:
        filters["dataset"] = _split(datasets)
    if ipcs:
        filters["ipc"] = _ints(ipcs, "--ipc")
    if protocols:
        filters["protocol"] = list(protocols)
    if evaluators:
        filters["evaluator"] = expand_evaluators(_split(evaluators))
    return filters


def _reference_leaderboard(
    scores: Any, filters: dict[str, Any] | None, fmt: str, suite: str | None, output: Path | None, weight: float
) -> None:
    """`ddbench leaderboard --reference`: accuracy, HLR, IOR and the DD-Ranking score per row."""
    from ddbench.results.leaderboard import format_table, render
    from ddbench.results.reference import reference_table
    from ddbench.util.fileio import write_atomic

    if suite is not None or fmt == "html":
        raise InvalidOptionError("--reference is a table of its own; leave out --suite and --format html")
    if scores.empty:
        console.print("[yellow]The store has no scores yet; run `ddbench run` first.")
        return
    table, notes = reference_table(scores, filters, weight)
    if output is not None:
        text = format_table(table, fmt, width=250)
        write_atomic(output, lambda tmp: tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8"))
        console.print(f"wrote {output}")
    else:
        render(table, fmt, console=Console(width=None if sys.stdout.isatty() else 250))
    for note in notes:
        console.print(f"[dim]{escape(note)}", highlight=False)


def _leaderboard_report(
    out: Path,
    scores: Any,
    runs: Any,
    fmt: str,
    suite: str | None,
    compare: bool,
    output: Path | None,
    rows: tuple[str, ...],
    columns: str,
    filters: dict[str, Any] | None,
) -> None:
    """`ddbench leaderboard` with --suite, --format html or --output: build the tables, then print or write them."""
    from ddbench.results import report
    from ddbench.results.leaderboard import leaderboard_table, mark_notes

    suite_name = None
    if suite is not None:
        from ddbench.running.suites import load_suite

        loaded = load_suite(suite)
        suite_name = loaded.name
        # the runs as the suite names them; ${VAR} paths need not be set just to read results
        suite_runs = [(r.spec, r.labels) for r in loaded.expand(require_env=False, validate=False)]
        tables = [
            report.suite_table(scores, runs, suite_runs, loaded.layout, loaded.name, compare=compare, filters=filters)
        ]
    elif fmt == "html":
        tables = report.store_tables(_filtered(scores, filters), runs)
    else:
        table = leaderboard_table(report.with_prior_variants(scores), rows=rows, columns=columns, filters=filters)
        tables = [report.ReportTable(key="leaderboard", title="", table=table, notes=mark_notes(table))]
    if fmt == "html":
        _write_html_report(tables, scores, runs, out, suite_name, output)
    else:
        _print_tables(tables, fmt, output)


def _write_html_report(
    tables: list[Any], scores: Any, runs: Any, out: Path, suite_name: str | None, output: Path | None
) -> None:
    """The self-contained HTML report of ``tables``, written to ``output`` (else a file in ``out``)."""
    from ddbench.results import report
    from ddbench.results.store import store_path
    from ddbench.util.fileio import write_atomic

    title = f"ddbench report: {tables[0].title}" if suite_name is not None else f"ddbench report: {store_path(out)}"
    page = report.html_report(
        tables, runs, store_dir=out, title=title, plots_html=_report_plots(tables, scores, runs, out)
    )
    # the suite's name comes from a file: it names a file inside --out, never a path out of it
    target = output or out / (f"report-{safe_name(suite_name)}.html" if suite_name is not None else "report.html")
    check_writable_dir(target.parent, "--output" if output is not None else "--out (or --output)")
    write_atomic(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    console.print(
        f"wrote {target} ({len(tables)} table(s), {sum(len(t.run_ids) for t in tables)} image grid(s), self-contained)"
    )


def _print_tables(tables: list[Any], fmt: str, output: Path | None) -> None:
    """Each table with its notes, on stdout or into ``output``."""
    from ddbench.results.leaderboard import format_table, render
    from ddbench.util.fileio import write_atomic

    for item in tables:
        title = item.title or None
        if output is not None:
            text = format_table(item.table, fmt, title=title, width=250)
            write_atomic(
                output,
                lambda tmp, text=text: tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8"),
            )
            console.print(f"wrote {output}")
        else:
            wide = Console(width=None if sys.stdout.isatty() else 250)  # a pipe gets the whole table, unwrapped
            if fmt != "rich" and title:
                console.print(f"[bold]{title}")
            render(item.table, fmt, console=wide, title=title)
        for note in item.notes:
            console.print(f"[dim]{note}", highlight=False)
        if item.not_run:
            console.print(
                f"[yellow]{len(item.not_run)} run(s) of the suite not in the store yet, e.g. {item.not_run[0]}",
                highlight=False,
            )


def _report_plots(tables: list[Any], scores: Any, runs: Any, out: Path) -> str:
    """The report's Plots section, drawn from the runs its tables show."""
    from ddbench.results.plots import plots_section_html

    shown = {run_id for table in tables for run_id in table.run_ids}
    return plots_section_html(scores[scores["run_id"].isin(shown)], runs[runs["run_id"].isin(shown)], out)


def _filtered(scores: Any, filters: dict[str, Any] | None) -> Any:
    """The scores that pass the leaderboard's filters (all of them without filters)."""
    from ddbench.results.leaderboard import apply_filters

    return apply_filters(scores, filters) if filters else scores


def _stdout_console() -> Console:
    # in a pipe rich assumes 80 columns; keep tables whole there
    return Console(width=None if sys.stdout.isatty() else 160)


@cli.command()
@click.argument("run_id")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory holding results.sqlite.",
)
def show(run_id: str, out: Path) -> None:
    """One run: spec, accuracy per evaluator, cost, versions and its image grid.

    RUN_ID may be a unique prefix; `ddbench runs` lists them.
    """
    from ddbench.results.run_views import show_renderables
    from ddbench.results.store import ResultsStore, store_path

    with ResultsStore(store_path(out), read_only=True) as store:  # never creates a store where none is
        runs = store.runs_frame()
        matches = runs[runs["run_id"].str.startswith(run_id)] if not runs.empty else runs
        if len(matches) != 1:
            several = len(matches) > 1
            listed = (matches if several else runs)["run_id"].tolist()
            more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
            known = ", ".join(listed[:20]) + more if listed else "none"
            what = (
                f"matches {len(matches)} runs: {known}; type more of the id"
                if several
                else f"matches no run. Known runs: {known}"
            )
            raise InvalidOptionError(f"'{run_id}' {what} (`ddbench runs --out {out}` lists them)")
        row = matches.iloc[0].to_dict()
        scores = store.scores_frame()
        scores = scores[scores["run_id"] == row["run_id"]] if not scores.empty else scores
    _stdout_console().print(*show_renderables(row, scores))


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory holding results.sqlite.",
)
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    shell_complete=plugin_names("dataset"),
    help="Only these datasets (comma-separated or repeated).",
)
@click.option("--prior", "priors", multiple=True, shell_complete=plugin_names("prior"), help="Only these priors.")
@click.option(
    "--algo",
    "--matcher",
    "matchers",
    multiple=True,
    shell_complete=plugin_names("matcher"),
    help="Only these matchers.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["done", "running", "failed"]),
    help="Only runs in this state (repeatable).",
)
def runs(
    out: Path, datasets: tuple[str, ...], priors: tuple[str, ...], matchers: tuple[str, ...], statuses: tuple[str, ...]
) -> None:
    """Every run in the store with its status (done, running, failed with its error), oldest first.

    \b
    Examples:
      ddbench runs --status failed
      ddbench runs --dataset fashion-mnist --prior ld3m --algo dm
    """
    from ddbench.results.run_views import runs_rows, runs_table
    from ddbench.results.store import ResultsStore, store_path

    with ResultsStore(store_path(out), read_only=True) as store:  # never creates a store where none is
        frame, scores = store.runs_frame(), store.scores_frame()
    filters = {"dataset": _split(datasets), "prior": _split(priors), "matcher": _split(matchers)}
    for column, wanted in filters.items():
        recorded = set(frame[column]) if not frame.empty else set()
        unknown = [w for w in wanted if w not in recorded]
        if recorded and unknown:  # a typo, not "no runs of that kind yet"
            close = difflib.get_close_matches(unknown[0], sorted(recorded), n=1, cutoff=0.5)
            hint = f"Did you mean '{close[0]}'? " if close else ""
            raise InvalidOptionError(
                f"No run in {store_path(out)} has {column} {unknown[0]!r}. {hint}Recorded: {', '.join(sorted(recorded))}"
            )
    columns, rows = runs_rows(frame, scores, filters, statuses)
    if not rows:
        console.print(
            f"[yellow]No runs in {store_path(out)}"
            + (" match the filters" if any(filters.values()) or statuses else "")
            + ".",
            highlight=False,
        )
        return
    _stdout_console().print(runs_table(columns, rows, title=f"{len(rows)} run(s) in {store_path(out)}"))
    failed = sum(row[columns.index("status")] == "failed" for row in rows)
    if failed:
        console.print(
            f"[dim]{failed} failed; `ddbench show RUN_ID` has the whole error, the run's log is in its directory; the same `ddbench run` retries them.",
            highlight=False,
        )


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory holding results.sqlite.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the PNG files (and the plotted data as JSON). [default: OUT/plots]",
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["ipc", "arch", "loss", "cost", "all"]),
    multiple=True,
    default=("all",),
    show_default=True,
    help="ipc: accuracy against IPC; arch: accuracy per architecture; loss: loss curves; cost: s/it, wall time, peak memory. Repeatable.",
)
def plot(out: Path, output: Path | None, kinds: tuple[str, ...]) -> None:
    """Draw the store's results as PNG files and print their paths (needs ddbench[plots]).

    \b
    Examples:
      ddbench plot
      ddbench plot --out ddbench-out --kind loss --output figures
    """
    from ddbench.results.plots import PLOT_KINDS, build_plots, require_matplotlib, write_plots
    from ddbench.results.store import ResultsStore, store_path

    require_matplotlib()  # before reading anything: the one line that says how to install it
    with ResultsStore(store_path(out), read_only=True) as store:
        scores, runs = store.scores_frame(), store.runs_frame()
    target = check_writable_dir(output or out / "plots", "--output")
    plots, notes = build_plots(scores, runs, out, PLOT_KINDS if "all" in kinds else tuple(dict.fromkeys(kinds)))
    for note in notes:
        console.print(f"[yellow]{note}", highlight=False)
    for path in write_plots(plots, target):
        click.echo(str(path))


@cli.command()
def plugins() -> None:
    """Every installed plugin per family: its description and the distribution it comes from."""
    table = Table(title="ddbench plugins")
    for column in ("family", "name", "description", "distribution", "target"):
        table.add_column(column)
    for family in registry.FAMILIES:
        for info in registry.list_plugins(family):
            # read without importing: only a string literal in the class body is seen (docs/plugins.md)
            description = registry.static_description(info) or '[dim](none: no description = "..." in its class body)'
            table.add_row(family, info.name, description, f"{info.distribution} {info.version}", info.target)
    # in a pipe rich assumes 80 columns; keep the table whole there
    Console(width=None if sys.stdout.isatty() else 160).print(table)


# `ddbench evaluate PATH`: scoring other tools' sets lives in its own module (click only at import)
from ddbench.cli.evaluate import evaluate as _evaluate  # noqa: E402

cli.add_command(_evaluate)

# `ddbench baseline`: the full-data reference of `ddbench leaderboard --reference`
from ddbench.cli.baseline import baseline as _baseline  # noqa: E402

cli.add_command(_baseline)


@cli.group(cls=EntryPointGroup, entry_point_group="ddbench.prior_commands")
def prior() -> None:
    """Commands that prepare a prior's generative model (train, convert)."""


#: OS errors that are the user's to fix (a read-only or full location), printed as one line
_USER_OS_ERRORS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print their message and exit with status 2."""
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_interrupts():  # `timeout`, `kill`, a pre-empting scheduler: handled as Ctrl-C
            code = cli.main(args=argv, prog_name="ddbench", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort as err:
        # click turns Ctrl-C (and our SIGTERM) inside a command into Abort; the cause says which
        if isinstance(err.__cause__, KeyboardInterrupt):
            _interrupted(err.__cause__)
        console.print("[red]Aborted.")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except DDBenchError as err:
        if isinstance(err, PluginLoadError) and err.__cause__ is not None:
            # a broken plugin fails loudly: show where its import went wrong
            traceback.print_exception(err.__cause__)
        # soft_wrap: the message stays one line (a pipe or a narrow terminal would break it up)
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except OSError as err:
        if err.errno not in _USER_OS_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        console.print(
            f"[bold red]error:[/] cannot use{escape(where)}: {describe_os_error(err)}; choose a location you can write to (--out, --output)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    except KeyboardInterrupt as err:
        _interrupted(err)


def _interrupted(err: KeyboardInterrupt) -> NoReturn:
    """Ctrl-C (exit 130) or SIGTERM (exit 143): the checkpoint stays, the same command resumes."""
    what = "Terminated (SIGTERM)" if isinstance(err, Terminated) else "Interrupted"
    console.print(
        f"[red]{what}; distillation resumes from its last checkpoint (every --checkpoint-every iterations or 5 minutes) when you run the same command again.",
        soft_wrap=True,
    )
    sys.exit(SIGTERM_EXIT_CODE if isinstance(err, Terminated) else 130)


if __name__ == "__main__":
    main()
