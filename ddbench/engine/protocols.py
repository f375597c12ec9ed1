"""Named evaluation protocols: how an evaluator is trained on a synthetic set.

Values from the DC/DSA reference (MNIST, Fashion-MNIST, CIFAR) and GLaD (ImageNet subsets).
An evaluator may override a protocol's lr through its ``protocol_lrs`` (GLaD trains VGG11 with 1e-4).

>>> get_protocol("dc").with_overrides(epochs=10).epochs
10
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ddbench.errors import InvalidOptionError

#: ``step``: ×0.1 at half the epochs (DC); ``warmup_cosine``: linear warm-up over the first half,
#: cosine decay over the second (GLaD); ``constant``: MTT experts.
SCHEDULES = ("step", "warmup_cosine", "constant")


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    name: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # one of SCHEDULES
    dsa: bool  # DSA on every training batch
    description: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidOptionError(
                f"Expected epochs ≥ 1 and batch_size ≥ 1 but got {self.epochs} and {self.batch_size}"
            )
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise InvalidOptionError(
                f"Expected lr > 0, momentum ≥ 0, weight_decay ≥ 0 but got {self.lr}, {self.momentum}, {self.weight_decay}"
            )
        if self.schedule not in SCHEDULES:
            raise InvalidOptionError(f"Expected schedule in {SCHEDULES} but got '{self.schedule}'")

    def with_overrides(self, **changes: Any) -> EvalProtocol:
        """A copy with some fields replaced; ``None`` values are ignored, unknown fields are errors."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise InvalidOptionError(f"EvalProtocol has no field(s) {unknown}; expected some of {sorted(fields)}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, EvalProtocol] = {
    "dc": EvalProtocol(
        name="dc",
        epochs=1000,
        batch_size=256,
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="step",
        dsa=True,
        description="DC/DSA: SGD lr 0.01 ×0.1 at half, 1000 epochs with DSA (MNIST, Fashion-MNIST, CIFAR).",
    ),
    "dc-noaug": EvalProtocol(
        name="dc-noaug",
        epochs=300,
        batch_size=256,
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="step",
        dsa=False,
        description="DC without augmentation: as 'dc' but 300 epochs and no DSA.",
    ),
    "glad": EvalProtocol(
        name="glad",
        epochs=1000,
        batch_size=256,
        lr=1e-3,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="warmup_cosine",
        dsa=True,
        description="GLaD: SGD lr 1e-3 (VGG11 1e-4), linear warm-up then cosine, 1000 epochs, DSA (ImageNet subsets).",
    ),
}


def get_protocol(name: str) -> EvalProtocol:
    """The protocol registered under ``name``."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(PROTOCOLS), n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InvalidOptionError(
            f"Unknown evaluation protocol '{name}'.{hint} Available protocols: {', '.join(PROTOCOLS)}."
        ) from None
