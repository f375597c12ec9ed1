"""The `ddbench` command line (click). Every command is a thin layer over the library."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable

import click
from rich.console import Console
from rich.table import Table

from ddbench import __version__, registry
from ddbench.errors import DDBenchError, InvalidOptionError, PluginLoadError, UnknownPluginError
from ddbench.spec import BUDGETS, RunEnv, RunSpec

console = Console(stderr=True)

#: the paper's datasets, tried in this order when `ddbench run` gets no --dataset
PAPER_DATASETS = (
    "imagenet-a", "imagenet-b", "imagenet-c", "imagenet-d", "imagenet-e",
    "imagenette", "imagewoof", "imagenet-birds", "imagenet-fruits", "imagenet-cats", "cifar10",
)  # fmt: skip
DEFAULT_DATASET = "fashion-mnist"
UNSEEN_EVALUATORS = ("alexnet", "vgg11", "resnet18", "vit")


# --------------------------------------------------------------------------- lazy command groups


class EntryPointGroup(click.Group):
    """A click group that also offers the commands other packages register under ``group``.

    Names come from package metadata; a command's module is imported only when it is run or its
    help is shown, so one broken plugin never breaks the rest of the CLI.
    """

    def __init__(self, *args: Any, entry_point_group: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry_point_group = entry_point_group

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.entry_point_group)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        ep = self._entry_points().get(name)
        if ep is None:
            return None
        try:
            return ep.load()
        except Exception as err:  # noqa: BLE001 - shown in help, raised in full when run
            return _broken_command(name, ep.value, err)


def _broken_command(name: str, target: str, err: Exception) -> click.Command:
    """Stands in for a command whose module failed to import: listed in help, fails loudly when run."""
    summary = f"{type(err).__name__}: {err}"

    def fail() -> None:
        traceback.print_exception(err)
        raise click.ClickException(f"The command '{name}' ({target}) failed to import: {summary}")

    return click.Command(name, callback=fail, short_help=f"[failed to import: {summary}]"[:120])


def _split(values: Iterable[str]) -> list[str]:
    """``--x a,b --x c`` → [a, b, c]."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _ints(values: Iterable[str], option: str) -> list[int]:
    try:
        return [int(v) for v in _split(values)]
    except ValueError:
        raise InvalidOptionError(f"Expected whole numbers for {option} but got {list(values)}") from None


def parse_key_values(values: Iterable[str], option: str) -> dict[str, Any]:
    """``--prior-opt T=10 --prior-opt residual=mean`` → {"T": 10, "residual": "mean"} (values as JSON when they parse)."""
    result: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidOptionError(f"Expected {option} KEY=VALUE but got '{item}'")
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    return result


def _options_for(name: str, options: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Options for one plugin: ``KEY`` applies to every plugin given, ``NAME.KEY`` to ``NAME`` only."""
    chosen = {}
    for key, value in options.items():
        scope, dot, bare = key.rpartition(".")
        if not dot:
            chosen[key] = value
        elif scope == name:
            chosen[bare] = value
        elif scope not in names:
            raise InvalidOptionError(f"Option '{key}' is scoped to '{scope}', which is not among {names}")
    return chosen


def _check_names(family: str, names: Iterable[str]) -> None:
    installed = registry.plugin_names(family)
    for name in names:
        if name not in installed:
            raise UnknownPluginError(registry.unknown_name_message(family, name, installed))


def _default_datasets(data_root: str | None) -> list[str]:
    """The paper's datasets whose data is present; Fashion-MNIST when none is."""
    present = []
    installed = registry.plugin_names("dataset")
    for name in PAPER_DATASETS:
        if name not in installed:
            continue
        ok, why = registry.create("dataset", name).available(data_root)
        if ok:
            present.append(name)
        else:
            console.print(f"[dim]skipping {name}: {why.splitlines()[0] if why else 'not found'}")
    if not present:
        console.print(f"[yellow]None of the paper's datasets is on disk; using {DEFAULT_DATASET}.")
        return [DEFAULT_DATASET]
    return present


# --------------------------------------------------------------------------------------- main


@click.group(cls=EntryPointGroup, entry_point_group="ddbench.commands", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ddbench")
def cli() -> None:
    """Dataset distillation benchmark: priors × matchers × evaluators, one engine."""


@cli.command()
@click.option("--dataset", "datasets", multiple=True, help="Dataset name(s); comma-separated or repeated. Default: the paper's datasets on disk, else fashion-mnist.")
@click.option("--prior", "priors", multiple=True, default=("pixel",), show_default=True, help="Prior name(s).")
@click.option("--algo", "matchers", multiple=True, default=("dm",), show_default=True, help="Matcher name(s): dc, dm, mtt, real (random real images).")
@click.option("--ipc", "ipcs", multiple=True, default=("1",), show_default=True, help="Images per class; several build the cross product.")
@click.option("--evaluators", "evaluators", multiple=True, default=("convnet",), show_default=True, help="Evaluator names; 'unseen' = alexnet,vgg11,resnet18,vit.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Number of evaluation seeds (0..N-1). [default: 3]")
@click.option("--seed", "distill_seed", type=int, default=0, show_default=True, help="Distillation seed.")
@click.option("--iterations", type=click.IntRange(min=0), default=None, help="Distillation iterations. [default: 1000]")
@click.option("--eval-epochs", type=click.IntRange(min=1), default=None, help="Override the protocol's training epochs.")
@click.option("--protocol", default="dc", show_default=True, help="Evaluation protocol: dc or glad.")
@click.option("--report", type=click.Choice(["final", "max"]), default="final", show_default=True, help="'max' = best test accuracy over training (GLaD's selection on the test set; labelled).")
@click.option("--res", type=int, default=None, help="Image resolution (ImageNet subsets: 128 or 256).")
@click.option("--lr", "lrs", multiple=True, help="Learning-rate override for a learnable tensor, NAME=VALUE (e.g. images=0.5).")
@click.option("--prior-opt", "prior_opts", multiple=True, help="Prior option KEY=VALUE (repeatable); NAME.KEY=VALUE applies to prior NAME only.")
@click.option("--algo-opt", "matcher_opts", multiple=True, help="Matcher option KEY=VALUE (repeatable); NAME.KEY=VALUE applies to matcher NAME only (e.g. dm.batch_real=64).")
@click.option("--build-experts", is_flag=True, help="MTT: train the missing expert trajectories first (shorthand for --algo-opt mtt.build_experts=true).")
@click.option("--no-dsa", is_flag=True, help="Distil without differentiable siamese augmentation.")
@click.option("--budget", type=click.Choice(sorted(BUDGETS)), default=None, help="Preset: smoke (seconds), demo (~10 min on 2 cores), paper (protocol defaults).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("ddbench-out"), show_default=True, help="Output directory (results.sqlite, runs/).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Where the dataset lives (overrides $DDBENCH_DATA).")
@click.option("--download", is_flag=True, help="Allow downloading the dataset where a network exists.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True, help="Checkpoint every N iterations.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue interrupted runs from their checkpoints.")
@click.option("--force", is_flag=True, help="Recompute even if the store already has this spec's results.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def run(**opts: Any) -> None:
    """Distil and evaluate the cross product datasets × priors × algos × IPCs.

    \b
    Example:
      ddbench run --dataset fashion-mnist --prior pixel --algo dm --ipc 1,10 --budget demo
    """
    from ddbench.pipeline import DataCache, run_spec
    from ddbench.store import ResultsStore

    priors, matchers = _split(opts["priors"]), _split(opts["matchers"])
    evaluators = _split(opts["evaluators"])
    evaluators = list(dict.fromkeys(itertools.chain.from_iterable(UNSEEN_EVALUATORS if e == "unseen" else (e,) for e in evaluators)))
    datasets = _split(opts["datasets"])
    _check_names("prior", priors)
    _check_names("matcher", matchers)
    _check_names("evaluator", evaluators)
    if datasets:
        _check_names("dataset", datasets)
    else:
        datasets = _default_datasets(opts["data_root"])

    budget = dict(BUDGETS[opts["budget"]]) if opts["budget"] else {}
    explicit = {
        "iterations": opts["iterations"],
        "eval_epochs": opts["eval_epochs"],
        "eval_seeds": tuple(range(opts["seeds"])) if opts["seeds"] else None,
    }
    settings = {**budget, **{k: v for k, v in explicit.items() if v is not None}}
    common = dict(
        res=opts["res"],
        seed=opts["distill_seed"],
        evaluators=tuple(evaluators),
        protocol=opts["protocol"],
        report=opts["report"],
        dsa=not opts["no_dsa"],
        lrs={k: float(v) for k, v in parse_key_values(opts["lrs"], "--lr").items()},
        **settings,
    )
    prior_opts = parse_key_values(opts["prior_opts"], "--prior-opt")
    matcher_opts = parse_key_values(opts["matcher_opts"], "--algo-opt")
    if opts["build_experts"] and "mtt" in matchers:
        matcher_opts.setdefault("mtt.build_experts", True)
    specs = [
        RunSpec(
            dataset=d, prior=p, matcher=m, ipc=i,
            prior_options=_options_for(p, prior_opts, priors), matcher_options=_options_for(m, matcher_opts, matchers),
            **common,
        )  # fmt: skip
        for d, p, m, i in itertools.product(datasets, priors, matchers, _ints(opts["ipcs"], "--ipc"))
    ]
    _validate_plugin_options(specs)
    env = RunEnv(
        out=opts["out"],
        data_root=opts["data_root"],
        device=opts["device"],
        download=opts["download"],
        checkpoint_every=opts["checkpoint_every"],
        resume=opts["resume"],
        force=opts["force"],
        progress=opts["progress"],
    )
    env.out.mkdir(parents=True, exist_ok=True)
    data_cache = DataCache(env)
    console.print(f"{len(specs)} run(s) → {env.out}")
    with ResultsStore(env.out / "results.sqlite") as store:
        for spec in specs:
            console.rule(f"{spec.label}  [dim]{spec.run_id}")
            outcome = run_spec(spec, env, store, data_cache, console)
            if outcome.reused_distillation:
                console.print(f"[dim]reused stored distillation {outcome.run_id} (use --force to recompute)")
        _print_leaderboard(store, fmt="rich", rows=("prior", "matcher", "ipc"), columns="dataset", filters={"run_id": [s.run_id for s in specs], "protocol": sorted({s.protocol_key() for s in specs})})


def _validate_plugin_options(specs: list[RunSpec]) -> None:
    """Fail fast on bad plugin options, before any data is loaded or any run starts."""
    seen: set[tuple[str, str, str]] = set()
    for spec in specs:
        for family, name, options in (("prior", spec.prior, spec.prior_options), ("matcher", spec.matcher, spec.matcher_options)):
            key = (family, name, json.dumps(options, sort_keys=True))
            if key not in seen:
                seen.add(key)
                registry.create(family, name, **options)


def _print_leaderboard(store: Any, fmt: str, rows: tuple[str, ...], columns: str, filters: dict[str, Any] | None) -> None:
    from ddbench.leaderboard import leaderboard_table, render

    frame = store.scores_frame()
    if frame.empty:
        console.print("[yellow]The store has no scores yet; run `ddbench run` first.")
        return
    render(leaderboard_table(frame, rows=rows, columns=columns, filters=filters), fmt)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("ddbench-out"), show_default=True, help="Output directory holding results.sqlite.")
@click.option("--format", "fmt", type=click.Choice(["rich", "markdown", "latex", "csv"]), default="rich", show_default=True)
@click.option("--rows", default="prior,matcher", show_default=True, help="Row keys (comma-separated): prior, matcher, ipc, dataset, evaluator.")
@click.option("--columns", default="dataset", show_default=True, help="Column key: dataset or evaluator (one column per architecture, with their average).")
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets.")
@click.option("--ipc", "ipcs", multiple=True, help="Only these IPCs.")
@click.option("--evaluators", "evaluators", multiple=True, help="Only these evaluators ('unseen' = the four unseen architectures).")
@click.option("--protocol", "protocols", multiple=True, help="Only these evaluation protocols, e.g. dc or 'dc[epochs=300]'.")
def leaderboard(out: Path, fmt: str, rows: str, columns: str, datasets: tuple[str, ...], ipcs: tuple[str, ...], evaluators: tuple[str, ...], protocols: tuple[str, ...]) -> None:
    """Mean ± std over seeds of every stored score, as a pivot table."""
    from ddbench.store import ResultsStore

    path = out / "results.sqlite"
    if not path.exists():
        raise InvalidOptionError(f"No results store at {path}; run `ddbench run --out {out}` first or pass --out.")
    filters: dict[str, Any] = {}
    if datasets:
        filters["dataset"] = _split(datasets)
    if ipcs:
        filters["ipc"] = _ints(ipcs, "--ipc")
    if protocols:
        filters["protocol"] = list(protocols)
    if evaluators:
        names = _split(evaluators)
        filters["evaluator"] = list(itertools.chain.from_iterable(UNSEEN_EVALUATORS if e == "unseen" else (e,) for e in names))
    with ResultsStore(path) as store:
        _print_leaderboard(store, fmt=fmt, rows=tuple(_split([rows])), columns=columns, filters=filters or None)


@cli.command()
@click.argument("run_id")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("ddbench-out"), show_default=True)
def show(run_id: str, out: Path) -> None:
    """A run's spec, scores and image grid (RUN_ID may be a unique prefix)."""
    from ddbench.store import ResultsStore

    with ResultsStore(out / "results.sqlite") as store:
        runs = store.runs_frame()
        matches = runs[runs["run_id"].str.startswith(run_id)] if not runs.empty else runs
        if len(matches) != 1:
            known = ", ".join(runs["run_id"].tolist()[:20]) if not runs.empty else "none"
            what = "matches several runs" if len(matches) > 1 else "matches no run"
            raise InvalidOptionError(f"'{run_id}' {what} in {out / 'results.sqlite'}. Known runs: {known}")
        row = matches.iloc[0].to_dict()
        scores = store.scores_frame()
        scores = scores[scores["run_id"] == row["run_id"]] if not scores.empty else scores
    click.echo(f"run {row['run_id']}  status {row['status']}")
    click.echo(json.dumps(json.loads(row["spec_json"]), indent=2, sort_keys=True))
    if row.get("error"):
        click.echo(f"error: {row['error']}")
    grid = Path(row["run_dir"]) / "grid.png"
    click.echo(f"image grid: {grid}" + ("" if grid.exists() else " (missing)"))
    if not scores.empty:
        cols = [c for c in ("evaluator", "seed", "protocol", "accuracy", "train_seconds", "peak_memory_bytes") if c in scores.columns]
        click.echo(scores[cols].to_string(index=False))


@cli.command()
def plugins() -> None:
    """Every installed plugin per family, with the distribution it comes from."""
    table = Table(title="ddbench plugins")
    for column in ("family", "name", "distribution", "target"):
        table.add_column(column)
    for family in registry.FAMILIES:
        for info in registry.list_plugins(family):
            table.add_row(family, info.name, f"{info.distribution} {info.version}", info.target)
    # in a pipe rich assumes 80 columns; keep the table whole there
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@cli.group(cls=EntryPointGroup, entry_point_group="ddbench.prior_commands")
def prior() -> None:
    """Commands that prepare a prior's generative model (train, convert)."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print their message and exit with status 2."""
    try:
        code = cli.main(args=argv, prog_name="ddbench", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        console.print("[red]Aborted.")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except DDBenchError as err:
        if isinstance(err, PluginLoadError) and err.__cause__ is not None:
            # a broken plugin fails loudly: show where its import went wrong
            traceback.print_exception(err.__cause__)
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("[red]Interrupted; completed iterations are checkpointed — run the same command again to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
