"""Which class of a pretrained class-conditional model each dataset class uses (GLaD and LD3M share it)."""

from __future__ import annotations

from collections.abc import Sequence

from ddbench.errors import InvalidOptionError

IMAGENET_CLASSES = 1000


def imagenet_ids(dataset: str) -> list[int] | None:
    """ImageNet-1k indices of an ImageNet subset's classes in label order, or None for other datasets."""
    try:
        from ddbench_plugins.datasets.imagenet import subset_table
    except ImportError:
        return None
    table = subset_table()
    if dataset.startswith("_") or dataset not in table:
        return None
    return [int(entry["idx"]) for entry in table[dataset]]


def resolve_class_ids(
    requested: Sequence[int] | None, dataset: str, num_classes: int, model_classes: int, model: str
) -> list[int]:
    """The model class of each of the dataset's ``num_classes`` classes.

    ``requested`` wins; otherwise an ImageNet subset on a 1000-class model uses its classes' ImageNet
    indices (so `imagenette` conditions on tench, English springer, …), and anything else the identity.
    """
    ids = list(requested) if requested is not None else None
    if ids is None and model_classes == IMAGENET_CLASSES:
        ids = imagenet_ids(dataset)
    if ids is None:
        ids = list(range(num_classes))
    if len(ids) != num_classes:
        raise InvalidOptionError(f"Expected {num_classes} class_ids (one per dataset class) but got {len(ids)}")
    if min(ids) < 0 or max(ids) >= model_classes:
        raise InvalidOptionError(
            f"class_ids must lie in [0, {model_classes}) for this {model}; got {ids}"
            + ("" if requested is not None else f": the dataset has more classes than the {model} — pass class_ids")
        )
    return ids
