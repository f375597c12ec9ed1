"""Soft labels as part of an evaluation protocol: the loss, where the labels come from, the store key.

Soft labels either come with a set (an N × K tensor in the file) or from a *teacher*: an evaluator
architecture that ddbench trains on the real training split (`ddbench.engine.full_data`) and caches; its
labels are ``softmax(teacher(x))`` per synthetic image, computed once (one label per image, DD-Ranking's
``soft_label_mode='S'``). Training on them uses soft cross-entropy (``ce``) or the KL divergence at a
temperature T (``kl``: both the labels and the student are softened by T, so a teacher's target is
``softmax(teacher(x) / T)``; the loss is scaled by T² as in knowledge distillation).

Scores with soft labels are keyed apart from hard-label ones, so no leaderboard cell mixes them::

    >>> protocol_key("dc", 300, None)
    'dc[epochs=300]'
    >>> protocol_key("dc", None, SoftLabels("kl", 4.0))
    'dc[soft=kl,T=4]'
    >>> protocol_key("dc", 50, SoftLabels("ce", teacher=Teacher("convnet", 2)))
    'dc[epochs=50,soft=ce,teacher=convnet:2ep]'
    >>> hard_protocol_key("dc[epochs=50,soft=kl,T=4,teacher=convnet:2ep:500pc]")
    'dc[epochs=50]'

Imports no torch at module level: `ddbench.engine.spec` uses it, and ``ddbench --help`` stays light.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ddbench.errors import InvalidOptionError

if TYPE_CHECKING:
    from torch import Tensor

SOFT_LOSSES = ("ce", "kl")
DEFAULT_KL_TEMPERATURE = 4.0
#: the teacher architecture of ``--soft-labels teacher`` (the distillation papers' evaluator)
DEFAULT_TEACHER = "convnet"
#: epochs a teacher trains on the real training split: few, since full data on a CPU is expensive
DEFAULT_TEACHER_EPOCHS = 2
#: teachers are trained with one fixed seed, so every run with the same teacher shares its labels
TEACHER_SEED = 0
#: the parts of a protocol key that belong to soft labels (`hard_protocol_key` drops them)
_SOFT_PARTS = ("soft=", "T=", "teacher=")


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A network of architecture ``arch`` trained ``epochs`` epochs on the real training split (its
    first ``train_per_class`` images per class where set, as smoke runs slice it), seed ``seed``."""

    arch: str = DEFAULT_TEACHER
    epochs: int = DEFAULT_TEACHER_EPOCHS
    seed: int = TEACHER_SEED
    train_per_class: int | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.arch or ""):
            raise InvalidOptionError(
                f"Expected a teacher architecture name (an evaluator, e.g. {DEFAULT_TEACHER}) but got {self.arch!r}"
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise InvalidOptionError(f"Expected --teacher-epochs ≥ 1 but got {self.epochs!r}")
        if self.train_per_class is not None and self.train_per_class < 1:
            raise InvalidOptionError(
                f"Expected the teacher's training images per class ≥ 1 but got {self.train_per_class}"
            )

    @property
    def key(self) -> str:
        parts = [self.arch, f"{self.epochs}ep"]
        if self.seed != TEACHER_SEED:
            parts.append(f"s{self.seed}")
        if self.train_per_class is not None:
            parts.append(f"{self.train_per_class}pc")
        return "teacher=" + ":".join(parts)


@dataclasses.dataclass(frozen=True)
class SoftLabels:
    """How soft labels are trained on: ``ce`` (soft cross-entropy) or ``kl`` (KL divergence to the
    labels at ``temperature``, scaled by T²), and the ``teacher`` that makes them (None: the set's own)."""

    loss: str
    temperature: float = 1.0
    teacher: Teacher | None = None

    def __post_init__(self) -> None:
        if self.loss not in SOFT_LOSSES:
            raise InvalidOptionError(f"Expected a soft-label loss 'ce' or 'kl' but got '{self.loss}'")
        if not self.temperature > 0:
            raise InvalidOptionError(f"Expected a temperature > 0 but got {self.temperature}")
        if self.loss == "ce" and self.temperature != 1.0:
            raise InvalidOptionError("--temperature applies to --soft-loss kl only; add --soft-loss kl or leave it out")

    @property
    def key(self) -> str:
        soft = "soft=ce" if self.loss == "ce" else f"soft=kl,T={self.temperature:g}"
        return soft if self.teacher is None else f"{soft},{self.teacher.key}"

    def describe(self) -> str:
        loss = "soft cross-entropy" if self.loss == "ce" else f"KL divergence at T={self.temperature:g}"
        if self.teacher is None:
            return f"the set's soft labels, {loss}"
        t = self.teacher
        data = (
            f"first {t.train_per_class} training images per class" if t.train_per_class else "the real training split"
        )
        return f"soft labels of a {t.arch} teacher ({t.epochs} epoch(s) on {data}, seed {t.seed}), {loss}"

    def loss_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        import torch.nn.functional as F

        if self.loss == "ce":
            return lambda logits, target: F.cross_entropy(logits, target)
        t = self.temperature

        def kl(logits: Tensor, target: Tensor) -> Tensor:
            # the labels' distribution at temperature t (softmax(log p / t)), KL to the student's at t
            teacher = F.log_softmax(target.clamp_min(1e-12).log() / t, dim=1)
            return F.kl_div(F.log_softmax(logits / t, dim=1), teacher, log_target=True, reduction="batchmean") * t * t

        return kl

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a spec or a score's protocol record (`from_dict` reads it back)."""
        record: dict[str, Any] = {"loss": self.loss, "temperature": self.temperature}
        if self.teacher is not None:
            record["teacher"] = dataclasses.asdict(self.teacher)
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SoftLabels:
        if not isinstance(record, Mapping) or "loss" not in record:
            raise InvalidOptionError(f"Expected soft labels as {{'loss': 'ce' or 'kl', ...}} but got {record!r}")
        teacher = record.get("teacher")
        if teacher is not None and not isinstance(teacher, Mapping):
            raise InvalidOptionError(
                f"Expected the soft labels' teacher as a table (arch, epochs, ...) but got {teacher!r}"
            )
        try:
            return cls(
                loss=record["loss"],
                temperature=float(record.get("temperature", 1.0)),
                teacher=Teacher(**teacher) if teacher is not None else None,
            )
        except TypeError as err:
            raise InvalidOptionError(f"Unreadable soft-label settings {dict(record)!r}: {err}") from None


def teacher_soft_labels(
    source: str, loss: str | None, temperature: float | None, epochs: int | None, train_per_class: int | None = None
) -> SoftLabels:
    """``--soft-labels teacher[:ARCH]`` with ``--soft-loss``, ``--temperature`` and ``--teacher-epochs``."""
    name, _, arch = source.partition(":")
    if name != "teacher":
        raise InvalidOptionError(
            f"Expected --soft-labels teacher or teacher:ARCH (e.g. teacher:{DEFAULT_TEACHER}) but got '{source}'"
        )
    loss = loss or "ce"
    if loss not in SOFT_LOSSES:
        raise InvalidOptionError(f"--soft-labels teacher trains with --soft-loss ce or kl, not '{loss}'")
    teacher = Teacher(
        arch or DEFAULT_TEACHER, epochs if epochs is not None else DEFAULT_TEACHER_EPOCHS, TEACHER_SEED, train_per_class
    )
    return SoftLabels(
        loss, temperature if temperature is not None else (DEFAULT_KL_TEMPERATURE if loss == "kl" else 1.0), teacher
    )


def protocol_key(protocol: str, eval_epochs: int | None, soft: SoftLabels | None) -> str:
    """The key scores are stored under: ``dc``, ``dc[epochs=300]``, ``dc[epochs=2,soft=kl,T=4]``.
    Soft-label scores always carry ``soft=…``, so they never share a cell with hard-label ones."""
    parts = ([f"epochs={eval_epochs}"] if eval_epochs is not None else []) + ([soft.key] if soft else [])
    return f"{protocol}[{','.join(parts)}]" if parts else protocol


def stored_protocol_key(spec: Mapping[str, Any]) -> str:
    """`protocol_key` of a spec dict (a stored run's, which may come from another ddbench version)."""
    soft = spec.get("soft_labels")
    return protocol_key(
        str(spec.get("protocol", "dc")), spec.get("eval_epochs"), SoftLabels.from_dict(soft) if soft else None
    )


def _split(key: str) -> tuple[str, list[str]]:
    name, bracket, rest = key.partition("[")
    return name, (rest.rstrip("]").split(",") if bracket else [])


def protocol_name(key: str) -> str:
    """``dc[epochs=2,soft=ce]`` → ``dc``."""
    return _split(key)[0]


def soft_part(key: str) -> str | None:
    """The soft-label part of a protocol key (``soft=kl,T=4,teacher=convnet:2ep``), None for hard labels."""
    parts = [p for p in _split(key)[1] if p.startswith(_SOFT_PARTS)]
    return ",".join(parts) or None


def hard_protocol_key(key: str) -> str:
    """The key of the same protocol with hard labels: ``dc[epochs=2,soft=ce]`` → ``dc[epochs=2]``."""
    name, parts = _split(key)
    kept = [p for p in parts if not p.startswith(_SOFT_PARTS)]
    return f"{name}[{','.join(kept)}]" if kept else name


def key_epochs(key: str) -> int | None:
    """The ``epochs=N`` override of a protocol key, None when it has none."""
    for part in _split(key)[1]:
        if part.startswith("epochs="):
            try:
                return int(part.removeprefix("epochs="))
            except ValueError:
                return None
    return None


__all__ = [
    "SoftLabels",
    "Teacher",
    "teacher_soft_labels",
    "protocol_key",
    "stored_protocol_key",
    "protocol_name",
    "soft_part",
    "hard_protocol_key",
    "key_epochs",
    "SOFT_LOSSES",
    "DEFAULT_TEACHER",
    "DEFAULT_TEACHER_EPOCHS",
    "TEACHER_SEED",
]
