"""One RunSpec from end to end: load data → distil (or reuse) → evaluate each evaluator × seed → store."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ddbench import registry
from ddbench.engine.distill import CHECKPOINT_FILE, Distiller
from ddbench.engine.dsa import DSA
from ddbench.engine.evaluate import resolve_batched
from ddbench.engine.protocols import EvalProtocol, get_protocol
from ddbench.engine.soft_labels import SoftLabels
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.engine.synthetic import SyntheticSet
from ddbench.engine.teacher import teacher_labels
from ddbench.errors import DDBenchError, InvalidOptionError, NonFiniteLossError
from ddbench.interfaces import EVALUATION_OVERRIDES, RealData
from ddbench.results.store import ResultsStore
from ddbench.running.identity import resolve_spec
from ddbench.running.preflight import check_data, check_memory
from ddbench.running.record_score import evaluate_and_record_seeds
from ddbench.running.run_state import StoreSnapshot
from ddbench.util._console import stderr_console
from ddbench.util.fileio import write_json_atomic
from ddbench.util.progress import make_progress

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    reused_distillation: bool
    scores: list[dict[str, Any]]


class DataCache:
    """Loads each (dataset, res) once per process; a sweep reuses it across specs."""

    def __init__(self, env: RunEnv) -> None:
        self.env = env
        self._cache: dict[tuple[str, int | None], RealData] = {}

    def get(self, spec: RunSpec) -> RealData:
        key = (spec.dataset, spec.res)
        if key not in self._cache:
            plugin = registry.create("dataset", spec.dataset)  # validates `res` itself
            self._cache[key] = plugin.load(root=self.env.data_root, res=spec.res, download=self.env.download)
        data = self._cache[key]
        if spec.train_per_class or spec.test_size:
            data = data.subset(spec.train_per_class, spec.test_size)
        return data


def check_runnable(specs: Sequence[RunSpec], env: RunEnv) -> None:
    """Raise, before the store or any run directory is touched, what each run would raise first:
    an unknown device or protocol, data that cannot be a benchmark (IPC above a class's size, a
    corrupt file) or a run that cannot fit in memory — so bad input is one line and loses nothing."""
    device = resolve_device(env.device)
    data_cache = DataCache(env)
    for spec in specs:
        get_protocol(spec.protocol)
        data = data_cache.get(spec)
        check_data(spec, data)
        check_memory(spec, data, device)


def resolve_device(name: str) -> torch.device:
    """``--device``: cpu, cuda, cuda:N or auto, checked against what this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InvalidOptionError(f"Unknown --device '{name}'; expected cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise InvalidOptionError(f"--device {name} is not supported; expected cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) >= torch.cuda.device_count():
        raise InvalidOptionError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 …)"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError("--device cuda was requested but no CUDA GPU is visible; use --device cpu")
    return device


def _clear_run_dir(run_dir: Path) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)


def run_spec(
    spec: RunSpec, env: RunEnv, store: ResultsStore, data_cache: DataCache, console: Console | None = None
) -> RunOutcome:
    """Distil ``spec`` (or reuse its stored synthetic set) and evaluate every missing (evaluator, seed).

    With ``env.progress`` the distillation and each evaluation show a bar on ``console``; where that
    console is a file (a sweep worker's run.log) they become periodic status lines.
    """
    console = console or stderr_console()
    spec = resolve_spec(spec, env)  # a no-op for specs resolved where they became runs (the CLI, run_sweep)
    with make_progress(env.progress, console) as bar:
        return _run_spec(spec, env, store, data_cache, console, bar)


def _run_spec(
    spec: RunSpec, env: RunEnv, store: ResultsStore, data_cache: DataCache, console: Console, bar: Any
) -> RunOutcome:
    device = resolve_device(env.device)
    run_id, run_dir = spec.run_id, env.run_dir(spec)
    protocol = get_protocol(spec.protocol)
    # the data first: a run that cannot be a benchmark fails before --force deletes anything
    data = data_cache.get(spec)
    check_data(spec, data)
    if env.force:
        store.delete_run(run_id)
        _clear_run_dir(run_dir)

    stored = StoreSnapshot.read(store).state(spec)  # "already done?" (ddbench.running.run_state)
    synthetic: SyntheticSet | None = None
    if stored.distilled:
        try:
            synthetic = SyntheticSet.load(run_dir)
        except DDBenchError as err:
            console.print(f"[yellow]Stored run {run_id} has no readable synthetic set ({err}); distilling again.")
    reused = synthetic is not None
    if synthetic is None:
        synthetic = _distil(spec, env, store, data, device, console, bar)
    elif stored.missing:
        widened = store.widen_evaluation(run_id, spec.evaluators, spec.eval_seeds)
        if widened is not None and (run_dir / "spec.json").exists():
            write_json_atomic(run_dir / "spec.json", widened)  # the run dir and the store tell one story
    scores = _evaluate_missing(spec, env, store, data, protocol, synthetic, stored.missing, device, console, bar)
    return RunOutcome(run_id=run_id, run_dir=run_dir, reused_distillation=reused, scores=scores)


def _distil(
    spec: RunSpec, env: RunEnv, store: ResultsStore, data: RealData, device: torch.device, console: Console, bar: Any
) -> SyntheticSet:
    """Distil ``spec`` into its run dir (resuming a checkpoint where ``env.resume``), stored as a run."""
    run_id, run_dir = spec.run_id, env.run_dir(spec)
    check_memory(spec, data, device)
    if not env.resume and (run_dir / CHECKPOINT_FILE).exists():
        (run_dir / CHECKPOINT_FILE).unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "spec.json", spec.to_dict())
    store.start_run(run_id, spec.to_dict(), str(run_dir))
    try:
        distiller = Distiller(
            spec,
            data,
            run_dir,
            device=device,
            dsa=DSA() if spec.dsa else None,
            checkpoint_every=env.checkpoint_every,
            chunk_size=env.chunk_size,
            progress=bar,
            cache_dir=str(env.cache_dir),
            tensorboard=env.tensorboard,
        )
        result = distiller.run(resume=env.resume)
        result.synthetic.save(run_dir)
    except BaseException as err:
        store.fail_run(run_id, f"{type(err).__name__}: {err}")
        raise
    store.finish_run(run_id, result.seconds, result.peak_memory_bytes, result.seconds_per_iteration, result.metrics)
    console.print(
        f"[green]Distilled[/] {spec.label} → {run_dir / 'grid.png'}"
        + (f" ({result.seconds_per_iteration:.2f} s/it)" if result.seconds_per_iteration else "")
    )
    return result.synthetic


def _evaluate_missing(
    spec: RunSpec,
    env: RunEnv,
    store: ResultsStore,
    data: RealData,
    protocol: EvalProtocol,
    synthetic: SyntheticSet,
    missing: Sequence[tuple[str, int]],
    device: torch.device,
    console: Console,
    bar: Any,
) -> list[dict[str, Any]]:
    """Evaluate ``synthetic`` for each missing (evaluator, seed) and store the scores; the new scores."""
    overrides = evaluation_overrides(synthetic.metadata)
    soft = SoftLabels.from_dict(spec.soft_labels) if spec.soft_labels else None
    labels = synthetic.labels
    if soft is not None and soft.teacher is not None and missing:
        console.print(f"soft labels: {soft.describe()}", highlight=False, markup=False)
        fingerprint = ((spec.identity or {}).get("dataset") or {}).get("key", {}).get("fingerprint")
        labels = teacher_labels(
            synthetic.images, data, soft.teacher, spec.protocol, cache_dir=env.cache_dir, fingerprint=fingerprint,
            device=device, progress=bar, say=lambda text: console.print(text, highlight=False, markup=False),
        )  # fmt: skip
    scores, diverged = [], []
    for evaluator, seed_groups in _evaluation_groups(missing, resolve_batched(env.eval_batch, device)):
        for seeds in seed_groups:
            try:
                results = evaluate_and_record_seeds(
                    synthetic.images, labels, data, evaluator, protocol, seeds, key=spec.protocol_key(),
                    device=device, epochs=spec.eval_epochs, lr=overrides.get("lr"), report=spec.report, soft=soft,
                    store=store, run_id=spec.run_id, progress=bar, batched=env.eval_batch,
                )  # fmt: skip
            except NonFiniteLossError as err:
                # the other evaluators and seeds still run and are stored: a resume redoes only these
                diverged.append(f"{evaluator} seed(s) {', '.join(map(str, seeds))}: {err}")
                console.print(f"  {evaluator} seed(s) {', '.join(map(str, seeds))}: diverged", highlight=False)
                continue
            for result in results:
                scores.append({"evaluator": evaluator, "seed": result.seed, "accuracy": result.accuracy})
                console.print(f"  {evaluator} seed {result.seed}: {100 * result.accuracy:.2f} %")
    if diverged:
        raise NonFiniteLossError(
            f"{len(diverged)} evaluation(s) diverged; the other {len(scores)} score(s) are stored:\n  "
            + "\n  ".join(diverged)
        )
    return scores


def _evaluation_groups(missing: Sequence[tuple[str, int]], batched: bool) -> list[tuple[str, list[list[int]]]]:
    """Per evaluator, its missing seeds as they are trained and stored together: all at once when
    they train as one batched model, else one by one, so that each seed's score is stored as soon
    as it exists."""
    groups = []
    for evaluator in dict.fromkeys(name for name, _ in missing):
        seeds = [seed for name, seed in missing if name == evaluator]
        groups.append((evaluator, [seeds] if batched else [[seed] for seed in seeds]))
    return groups


def evaluation_overrides(metadata: dict[str, Any]) -> dict[str, float]:
    """What evaluation of a synthetic set uses instead of the protocol's values (`Matcher.evaluation_overrides`)."""
    overrides = metadata.get("evaluation")
    if overrides is None:
        # sets saved before matchers declared overrides kept them in the matcher's metadata
        overrides = {k: v for k, v in (metadata.get("matcher") or {}).items() if k in EVALUATION_OVERRIDES}
    return {k: float(v) for k, v in overrides.items()}


def spec_from_run_dir(run_dir: Path) -> RunSpec:
    return RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
