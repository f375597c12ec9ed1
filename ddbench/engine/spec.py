"""RunSpec: one distillation run and its evaluation, as plain data with a stable hash.

The hash (``run_id``) covers only what changes the distilled images, so adding evaluators or seeds
to a finished run reuses its synthetic set. Where the data lives, the device and the output
directory are *environment* (`RunEnv`): recorded, never hashed as such.

A spec as typed is resolved before it runs (`ddbench.running.identity.resolve_spec`): its ``identity``
then records what will run (effective plugin options, plugin versions, model and data digests),
and the run id hashes that instead of the typed options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddbench.engine.soft_labels import SoftLabels, stored_protocol_key
from ddbench.errors import InvalidOptionError

#: what an evaluation reports: the accuracy after the last epoch, or also the best test round
REPORTS = ("final", "max")

#: 2: the run id hashes the resolved identity (effective options, versions, data and model digests);
#: runs stored with version 1 hashed the typed options and are kept apart in leaderboards
SPEC_VERSION = 2

#: fields of RunSpec that define the synthetic set (and hence the run id)
DISTILL_FIELDS = (
    "dataset",
    "res",
    "prior",
    "prior_options",
    "matcher",
    "matcher_options",
    "ipc",
    "iterations",
    "seed",
    "lrs",
    "dsa",
    "train_per_class",
)


@dataclasses.dataclass
class RunSpec:
    dataset: str = "fashion-mnist"
    prior: str = "pixel"
    matcher: str = "dm"
    ipc: int = 1
    res: int | None = None
    iterations: int = 1000
    seed: int = 0
    prior_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    matcher_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    lrs: dict[str, float] = dataclasses.field(default_factory=dict)
    dsa: bool = True
    #: use only the first N training images of each class (smoke runs); None = all
    train_per_class: int | None = None
    # evaluation
    evaluators: tuple[str, ...] = ("convnet",)
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    protocol: str = "dc"
    eval_epochs: int | None = None
    report: str = "final"
    #: evaluate on the first N test images only (smoke runs); None = the whole test split
    test_size: int | None = None
    #: train evaluators on a teacher's soft labels (`ddbench.engine.soft_labels.SoftLabels.to_dict`); None = hard labels
    soft_labels: dict[str, Any] | None = None
    #: what will run, recorded by `ddbench.running.identity.resolve_spec` (None: not resolved yet)
    identity: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.evaluators = tuple(self.evaluators)
        self.eval_seeds = tuple(int(s) for s in self.eval_seeds)
        if self.ipc < 1:
            raise InvalidOptionError(f"Expected --ipc ≥ 1 but got {self.ipc}")
        if self.iterations < 0:
            raise InvalidOptionError(f"Expected --iterations ≥ 0 but got {self.iterations}")
        if self.report not in REPORTS:
            raise InvalidOptionError(f"Expected report 'final' or 'max' but got '{self.report}'")
        if not self.evaluators:
            raise InvalidOptionError("Expected at least one evaluator")
        if not self.eval_seeds:
            raise InvalidOptionError("Expected at least one evaluation seed")
        if self.soft_labels is not None and SoftLabels.from_dict(self.soft_labels).teacher is None:
            raise InvalidOptionError(
                "A run's soft labels come from a teacher (--soft-labels teacher); its set has hard labels"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["evaluators"] = list(self.evaluators)
        data["eval_seeds"] = list(self.eval_seeds)
        data["spec_version"] = SPEC_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        data.pop("spec_version", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidOptionError(f"Unknown spec fields {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    def distill_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DISTILL_FIELDS}

    @property
    def run_id(self) -> str:
        """Hash of what defines the synthetic set: of the resolved identity where there is one
        (`identity_key`), which replaces the typed options and learning rates."""
        fields = self.distill_dict()
        if self.identity is not None:
            for name in ("prior_options", "matcher_options", "lrs"):
                del fields[name]
            fields["identity"] = identity_key(self.identity)
        payload = json.dumps({"v": SPEC_VERSION, **fields}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def plugin_options(self, family: str) -> dict[str, Any]:
        """The options to build the ``prior`` or ``matcher`` from: the effective ones once resolved."""
        if self.identity is not None and family in self.identity:
            return dict(self.identity[family]["options"])
        return dict(self.prior_options if family == "prior" else self.matcher_options)

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.prior}+{self.matcher} ipc{self.ipc}"

    def protocol_key(self) -> str:
        """Names the evaluation protocol and its overrides, e.g. ``dc``, ``dc[epochs=300]`` or, with
        teacher soft labels, ``dc[epochs=300,soft=ce,teacher=convnet:2ep]``."""
        return stored_protocol_key(
            {"protocol": self.protocol, "eval_epochs": self.eval_epochs, "soft_labels": self.soft_labels}
        )


#: entries of an identity that are recorded but never hashed
IDENTITY_LABELS = ("device",)
#: fields of a plugin's identity record that the run id hashes (not its full options or paths)
IDENTITY_HASHED = ("name", "version", "key")


def identity_key(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved identity the run id hashes: each plugin's name, version and key
    (effective options without neutral ones, model paths as content digests, the data fingerprint)
    and the learning rates; never paths, full option records or the device."""
    return {
        name: {k: entry[k] for k in IDENTITY_HASHED if k in entry}
        if isinstance(entry, dict) and "key" in entry
        else entry
        for name, entry in identity.items()
        if name not in IDENTITY_LABELS
    }


def recorded_labels(spec: Mapping[str, Any], family: str = "prior") -> Mapping[str, Any] | None:
    """What a resolved run recorded of its ``family`` plugin (`ddbench.running.identity.plugin_labels`);
    None for a run from before labels, or one never resolved."""
    identity = spec.get("identity") if isinstance(spec, Mapping) else None
    record = identity.get(family) if isinstance(identity, Mapping) else None
    labels = record.get("labels") if isinstance(record, Mapping) else None
    return labels if isinstance(labels, Mapping) else None


def spec_version(spec: dict[str, Any]) -> int | None:
    """The spec version a stored spec dict was written with (`RunSpec.to_dict` always records it;
    None for a dict that does not say)."""
    value = spec.get("spec_version")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cache_dir_under(out: str | Path) -> Path:
    """Where the runs of output directory ``out`` keep what they derive and share (MTT's experts,
    soft-label teachers, full-data networks)."""
    return Path(out) / "cache"


@dataclasses.dataclass
class RunEnv:
    """Where and how a spec runs; not part of its identity."""

    out: Path = Path("ddbench-out")
    data_root: str | None = None
    device: str = "cpu"
    download: bool = False
    checkpoint_every: int = 50
    #: images regenerated with a graph at once (the split backward); None: the prior's hint
    chunk_size: int | None = None
    resume: bool = True
    force: bool = False
    progress: bool = True
    #: also log each run's per-iteration metrics as TensorBoard events (``ddbench run --tensorboard``)
    tensorboard: bool = False
    #: train an evaluator's seeds as one batched model (``--eval-batch/--no-eval-batch``); None: on a
    #: GPU only (`ddbench.engine.evaluate.resolve_batched`). A score changes only by floating-point
    #: rounding, which long training of deep networks can amplify.
    eval_batch: bool | None = None

    @property
    def cache_dir(self) -> Path:
        return cache_dir_under(self.out)

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / "runs" / spec.dataset / f"{spec.prior}-{spec.matcher}-ipc{spec.ipc}-{spec.run_id}"


#: budget presets for `ddbench run --budget`; each sets defaults the user's explicit options override
#: (plugins add option defaults of their own: `Plugin.budget_options`)
BUDGETS: dict[str, dict[str, Any]] = {
    # seconds on a laptop CPU: proves the whole pipeline works, numbers mean little
    "smoke": {"iterations": 20, "eval_epochs": 50, "eval_seeds": (0,), "train_per_class": 500, "test_size": 2000},
    # the README demo: a real Fashion-MNIST result in about ten minutes on 2 cores
    "demo": {"iterations": 200, "eval_epochs": 300, "eval_seeds": (0, 1, 2)},
    # the protocols' own numbers
    "paper": {},
}
