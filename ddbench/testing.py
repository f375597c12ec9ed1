"""The plugin contract as checks a plugin's own test suite runs (ddbench's built-ins run them too).

    from ddbench.testing import check_prior, check_matcher

    def test_my_prior_keeps_the_contract():
        check_prior(MyPrior, factor=2)

    def test_my_matcher_keeps_the_contract(tmp_path):
        check_matcher(MyMatcher, cache_dir=tmp_path, batch_real=8)

Each check builds the plugin from its options, drives it the way the engine does on a tiny
in-memory dataset (`tiny_data`: a few seconds on a CPU) and raises `ContractError` naming the rule
that failed; docs/plugins.md ("Writing a plugin") states the same rules. `check_declarations` is the
static part (class attributes tools read) and runs inside every other check.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ddbench.engine.dsa import DSA
from ddbench.engine.seeding import generator, seed_everything
from ddbench.errors import DDBenchError
from ddbench.interfaces import (
    ANY_TENSOR,
    EVALUATION_OVERRIDES,
    DatasetPlugin,
    Evaluator,
    IdentityContext,
    MatchContext,
    Matcher,
    Prior,
    RealData,
    RealSampler,
    class_labels,
)

#: the base class each family's plugins subclass (`ddbench.registry.BASE_CLASSES`, without executors)
FAMILY_BASES: dict[str, type] = {"dataset": DatasetPlugin, "prior": Prior, "matcher": Matcher, "evaluator": Evaluator}


class ContractError(AssertionError):
    """A plugin breaks a rule of the plugin contract (the message names the rule)."""


def _require(condition: bool, plugin: Any, rule: str) -> None:
    if not condition:
        name = getattr(plugin, "name", "") or getattr(plugin, "__name__", type(plugin).__name__)
        raise ContractError(f"plugin '{name}': {rule} (see docs/plugins.md in ddbench's repository)")


def tiny_data(
    num_classes: int = 3,
    per_class: int = 8,
    channels: int = 1,
    res: int = 16,
    seed: int = 0,
    test_per_class: int | None = None,
    name: str = "contract-tiny",
) -> RealData:
    """A small in-memory dataset whose classes differ in brightness (so they are learnable), for
    contract checks and tests; ``test_per_class`` defaults to half of ``per_class``."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(num_classes).repeat_interleave(n)
        base = (labels.float() / max(1, num_classes - 1) * 160 + 40).view(-1, 1, 1, 1)
        noise = torch.randn(len(labels), channels, res, res, generator=gen) * 30
        return (base + noise).clamp(0, 255).to(torch.uint8), labels

    train_images, train_labels = split(per_class)
    test_images, test_labels = split(test_per_class or max(2, per_class // 2))
    return RealData(
        name=name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=[f"class{i}" for i in range(num_classes)],
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


# ------------------------------------------------------------------------------ declarations


def _option_names(cls: type) -> set[str]:
    return {p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")}


def _positive_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) and v >= 0 for v in value)


def check_declarations(cls: type, family: str) -> None:
    """The class attributes tools read are well formed (no instance is built)."""
    base = FAMILY_BASES.get(family)
    _require(base is not None, cls, f"family '{family}' is one of {sorted(FAMILY_BASES)}")
    _require(
        isinstance(cls, type) and issubclass(cls, base),
        cls,
        f"a {family} plugin subclasses ddbench.interfaces.{base.__name__}",
    )
    _require(isinstance(cls.description, str) and cls.description.strip() != "" and "\n" not in cls.description, cls,
             "`description` is one non-empty line (`ddbench plugins` shows it)")  # fmt: skip
    if cls.__qualname__ == cls.__name__:  # a module-level class: its source can be read
        from ddbench import registry

        static = registry.declared_string(cls.__module__, cls.__name__, "description")
        _require(static is None or static == cls.description, cls,
                 "`description` is a string literal in the class's own body (`ddbench plugins` reads it from "
                 "source without importing; a computed or inherited one shows as none)")  # fmt: skip
    _require(cls.version is None or (isinstance(cls.version, int) and not isinstance(cls.version, bool) and cls.version >= 0), cls,
             "`version` is a whole number ≥ 0 (bump it when results change) or None")  # fmt: skip
    _require(cls.display_order is None or isinstance(cls.display_order, int), cls, "`display_order` is an int or None")
    options = _option_names(cls)
    for attribute in ("path_options", "neutral_options", "housekeeping_options"):
        declared = getattr(cls, attribute)
        _require(isinstance(declared, tuple) and set(declared) <= options, cls,
                 f"`{attribute}` is a tuple of __init__ options; {sorted(set(declared) - options)} are not")  # fmt: skip
    missing_defaults = [n for n, p in inspect.signature(cls).parameters.items()
                        if n in options and p.default is inspect.Parameter.empty]  # fmt: skip
    _require(
        not missing_defaults,
        cls,
        f"every __init__ option has a default (a run may give none); {missing_defaults} have none",
    )
    if issubclass(cls, Prior):
        _check_prior_declarations(cls)
    if issubclass(cls, Matcher):
        _check_matcher_declarations(cls, options)
    if issubclass(cls, Evaluator):
        _require(cls.seconds_per_image is None or _positive_pair(cls.seconds_per_image), cls,
                 "`seconds_per_image` is (train per image-epoch, per test image) or None")  # fmt: skip


def _check_prior_declarations(cls: type[Prior]) -> None:
    _require(
        not hasattr(cls, "default_lrs"),
        cls,
        "`default_lrs` tables are gone: declare `base_lrs` (rates for a matcher of lr_scale 1)",
    )
    _require(isinstance(cls.base_lrs, dict) and all(isinstance(v, (int, float)) and v > 0 for v in cls.base_lrs.values()), cls,
             "`base_lrs` maps tensor names to positive learning rates")  # fmt: skip
    _require(ANY_TENSOR not in cls.base_lrs, cls, f"`base_lrs` names tensors; '{ANY_TENSOR}' is not one")
    _require(_positive_pair(cls.cost_factor), cls, "`cost_factor` is (at IPC 1, at IPC 10), both ≥ 0")
    _require(_positive_pair(cls.seconds_per_generation), cls,
             "`seconds_per_generation` is (at IPC 1, at IPC 10), both ≥ 0")  # fmt: skip
    _require(isinstance(cls.generator_label({}), str), cls, "`generator_label(options)` returns a string")


def _check_matcher_declarations(cls: type[Matcher], options: set[str]) -> None:
    _require(isinstance(cls.lr_scale, (int, float)) and cls.lr_scale > 0, cls, "`lr_scale` is a positive number")
    _require(cls.seconds_per_iteration is None or _positive_pair(cls.seconds_per_iteration), cls,
             "`seconds_per_iteration` is (at IPC 1, at IPC 10) or None")  # fmt: skip
    option = cls.cost_option
    _require(option is None or (isinstance(option, tuple) and len(option) == 3 and option[0] in options and option[1] > 0 and 0 <= option[2] <= 1),
             cls, "`cost_option` is (an __init__ option, its default > 0, a share in [0, 1]) or None")  # fmt: skip


# ------------------------------------------------------------------------------------ priors


def _build(cls: type, family: str, options: dict[str, Any]) -> Any:
    """``cls(**options)`` as `ddbench.registry.create` builds it."""
    from ddbench import registry

    return registry.instantiate(family, getattr(cls, "name", "") or cls.__name__, cls, options)


def _build_for_run(cls: type, family: str, options: dict[str, Any], data: RealData, ipc: int) -> Any:
    """The plugin as the engine builds it for a run: from its `effective_options` in this run's
    context, which must name only options its ``__init__`` takes."""
    from ddbench import registry

    plugin = _build(cls, family, options)
    context = IdentityContext(dataset="tiny", resolution=data.resolution, ipc=ipc, device=torch.device("cpu"))
    effective = registry.effective_options(family, plugin.name, plugin, context)
    accepted = set(inspect.signature(cls).parameters)
    _require(isinstance(effective, dict) and set(effective) <= accepted, plugin,
             f"effective_options returns a dict of __init__ options ({sorted(accepted)}), "
             f"got {effective if not isinstance(effective, dict) else sorted(set(effective) - accepted)}")  # fmt: skip
    return _build(cls, family, effective)


def check_prior(cls: type[Prior], data: RealData | None = None, ipc: int = 2, **options: Any) -> None:
    """A prior built with ``options`` set up on ``data``: its state, images and gradients are what
    the engine relies on (shapes, finite normalised images, per-sample generation for the split
    backward, gradients reaching every learnable tensor, a rate for each)."""
    check_declarations(cls, "prior")
    data = data or tiny_data()
    prior = _build_for_run(cls, "prior", options, data, ipc)
    device = torch.device("cpu")
    prior.setup(data, device)
    labels = class_labels(data.num_classes, ipc)
    gen = generator(0, "contract")
    real = torch.cat([data.sample_class(c, ipc, gen) for c in range(data.num_classes)])
    state = prior.init_state(real, labels, gen)
    n = len(labels)
    _require(len(state.params) > 0, prior, "init_state returns at least one learnable tensor in LatentState.params")
    for name, tensor in state.tensors().items():
        _require(isinstance(tensor, Tensor) and tensor.dim() >= 1 and tensor.shape[0] == n, prior,
                 f"every state tensor has the synthetic sample index first ({name} has shape {tuple(tensor.shape)} for {n} samples)")  # fmt: skip
    for tensor in state.params.values():
        tensor.requires_grad_(True)
    everything = torch.arange(n)
    images = prior.generate(state, everything)
    shape = (n, data.channels, data.resolution, data.resolution)
    _require(
        tuple(images.shape) == shape, prior, f"generate returns images of shape {shape}, got {tuple(images.shape)}"
    )
    _require(
        images.dtype == torch.float32 and bool(torch.isfinite(images).all()),
        prior,
        "generate returns finite float32 images",
    )
    _require(
        float(images.detach().abs().max()) < 50,
        prior,
        "generate returns images normalised with the dataset's mean/std, not 0-255 pixels",
    )
    with torch.no_grad():
        part = torch.tensor([n - 1, 0])
        # loose: batched kernels may round differently; a batch statistic would differ far more
        torch.testing.assert_close(prior.generate(state, part), prior.generate(state, everything)[part], rtol=1e-2, atol=1e-2,
                                   msg=lambda m: f"plugin '{prior.name}': generate(state, idx) equals the full set's rows idx "
                                                 f"(the split backward regenerates chunks) — {m}")  # fmt: skip
    images.float().pow(2).mean().backward()
    lrs = prior.learning_rates(1.0)
    for name, tensor in state.params.items():
        if name not in lrs and ANY_TENSOR not in lrs:
            continue  # not learnable with these options (is_learnable)
        _require(tensor.grad is not None and bool(torch.isfinite(tensor.grad).all()), prior,
                 f"gradients of the images reach the learnable tensor '{name}' (finite)")  # fmt: skip
    _require(
        all(isinstance(v, float) and v > 0 and math.isfinite(v) for v in lrs.values()),
        prior,
        "learning_rates gives positive rates",
    )
    declared = set(lrs) - {ANY_TENSOR}
    _require(
        declared <= set(state.params),
        prior,
        f"`base_lrs` names tensors init_state returns; {sorted(declared - set(state.params))} are not",
    )


# ---------------------------------------------------------------------------------- matchers


def check_matcher(
    cls: type[Matcher],
    data: RealData | None = None,
    ipc: int | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> None:
    """A matcher built with ``options``, set up as the engine does (with DSA), gives a finite scalar
    loss whose gradient reaches the images, the same loss for the same engine seed (randomness from
    the seeded RNG, one DSA seed for both sides), and round-trips its state; at ``ipc`` images per
    class, else at 1 (the CLI's default, where a per-class variance or batch statistic of one image
    is NaN) and at 2."""
    check_declarations(cls, "matcher")
    data = data or tiny_data()
    for each in (1, 2) if ipc is None else (ipc,):
        _check_matcher_at(cls, data, each, cache_dir, options)


def _check_matcher_at(
    cls: type[Matcher], data: RealData, ipc: int, cache_dir: str | Path | None, options: dict[str, Any]
) -> None:
    matcher = _build_for_run(cls, "matcher", options, data, ipc)
    device = torch.device("cpu")
    context = MatchContext(
        data=data, ipc=ipc, device=device, dsa=DSA(), cache_dir=str(cache_dir) if cache_dir else None
    )
    matcher.setup(context)
    _require(getattr(matcher, "context", None) is context, matcher, "setup(context) calls super().setup(context)")
    labels = class_labels(data.num_classes, ipc)
    start = torch.cat([data.sample_class(c, ipc, generator(1, "contract")) for c in range(data.num_classes)])
    _require(
        isinstance(matcher.steps_per_iteration, int) and matcher.steps_per_iteration >= 1,
        matcher,
        "steps_per_iteration ≥ 1",
    )

    def loss_at(iteration: int) -> tuple[Tensor, Tensor]:
        seed_everything(1000 + iteration)  # what the engine does before each iteration
        matcher.begin_iteration(iteration)
        images = start.clone().requires_grad_(True)
        return matcher.loss(images, labels, RealSampler(data, generator(2, iteration), device)), images

    loss, images = loss_at(0)
    _require(isinstance(loss, Tensor) and loss.dim() == 0, matcher, "loss returns a scalar tensor")
    _require(bool(torch.isfinite(loss)), matcher, f"loss is finite on normalised real-like images (at IPC {ipc})")
    if cls.distils:
        loss.backward()
        _require(images.grad is not None and bool(torch.isfinite(images.grad).all()) and bool(images.grad.abs().sum() > 0), matcher,
                 "loss is differentiable in the synthetic images (a finite, non-zero gradient)")  # fmt: skip
    state = {k: v.clone() for k, v in matcher.state_dict().items()}
    again, _ = loss_at(0)
    _require(torch.allclose(loss.detach(), again.detach(), rtol=1e-4, atol=1e-6), matcher,
             "the same engine seed gives the same loss: draw randomness (DSA seeds included, `MatchContext.draw_seed`) "
             "from the RNG the engine seeds, not from your own")  # fmt: skip
    matcher.after_step(images.detach(), labels, RealSampler(data, generator(3), device))
    matcher.load_state_dict(state)
    overrides = matcher.evaluation_overrides()
    _require(isinstance(overrides, dict) and set(overrides) <= set(EVALUATION_OVERRIDES), matcher,
             f"evaluation_overrides sets only {list(EVALUATION_OVERRIDES)}")  # fmt: skip
    for group in matcher.parameters():
        _require(
            isinstance(group, dict) and "params" in group,
            matcher,
            "parameters() returns optimiser groups ({'params': [...], 'lr': ...})",
        )


# ------------------------------------------------------------------------- other families


def check_evaluator(
    cls: type[Evaluator], channels: int = 1, num_classes: int = 3, resolution: int = 32, **options: Any
) -> None:
    """The network takes normalised images and returns logits; ``embed`` gives per-image features."""
    check_declarations(cls, "evaluator")
    evaluator = _build(cls, "evaluator", options)
    torch.manual_seed(0)
    evaluator.check_input(channels, resolution)
    net = evaluator.build(channels, num_classes, resolution)
    x = torch.randn(2, channels, resolution, resolution)
    logits = net(x)
    _require(
        tuple(logits.shape) == (2, num_classes),
        evaluator,
        f"build(...) returns a network whose logits are (batch, {num_classes})",
    )
    embed = getattr(net, "embed", None)
    _require(
        callable(embed) and embed(x).shape[0] == 2,
        evaluator,
        "the network has embed(x) → features (distribution matching uses it)",
    )
    if evaluator.batching_obstacle() is None:
        _check_batched_seeds(evaluator, net, channels, num_classes, resolution)


def _check_batched_seeds(
    evaluator: Evaluator, net: nn.Module, channels: int, num_classes: int, resolution: int
) -> None:
    """An evaluator that allows batched seeds gives each seed's own logits when two are stacked."""
    from ddbench.engine.seed_batching import StackedNetworks

    torch.manual_seed(1)
    other = evaluator.build(channels, num_classes, resolution)
    x = torch.randn(2, 3, channels, resolution, resolution)
    try:
        batched = StackedNetworks([net, other]).forward(x)
    except RuntimeError as err:
        _require(False, evaluator, f"a network that allows batched seeds runs under torch.func.vmap ({err}); "
                 "return a reason from batching_obstacle() instead")  # fmt: skip
    alone = torch.stack([net(x[0]), other(x[1])])
    _require(torch.allclose(batched, alone, rtol=1e-4, atol=1e-5), evaluator,
             "a network that allows batched seeds gives each seed its own logits when stacked (batching_obstacle)")  # fmt: skip


def check_dataset(cls: type[DatasetPlugin], **options: Any) -> None:
    """Declarations, and `available` answers without raising wherever the data is (or is not)."""
    check_declarations(cls, "dataset")
    dataset = _build(cls, "dataset", options)
    _require(all(isinstance(r, int) and r > 0 for r in cls.resolutions), dataset, "`resolutions` are positive ints")
    ok, reason = dataset.available(str(Path("/nonexistent-ddbench-contract")))
    _require(
        isinstance(ok, bool) and isinstance(reason, str),
        dataset,
        "available(root) returns (bool, reason) and never raises",
    )


def check_executor(cls: type, **options: Any) -> None:
    """An executor subclasses `ddbench.running.executor.Executor`, describes itself and builds from its options."""
    from ddbench.running.executor import Executor

    _require(
        isinstance(cls, type) and issubclass(cls, Executor),
        cls,
        "an executor plugin subclasses ddbench.running.executor.Executor",
    )
    _require(isinstance(cls.description, str) and cls.description.strip() != "" and "\n" not in cls.description, cls,
             "`description` is one non-empty line (`ddbench plugins` shows it)")  # fmt: skip
    executor = _build(cls, "executor", options)
    _require(isinstance(executor.describe(), str), executor, "describe() returns one line for the sweep header")


#: the check for each family
CHECKS: dict[str, Callable[..., None]] = {
    "prior": check_prior,
    "matcher": check_matcher,
    "evaluator": check_evaluator,
    "dataset": check_dataset,
    "executor": check_executor,
}


def check_registered(family: str, name: str, **options: Any) -> None:
    """The contract check of a plugin as installed (its entry point, base class and options)."""
    from ddbench import registry

    cls = registry.get_plugin_class(family, name)
    try:
        CHECKS[family](cls, **options)
    except DDBenchError as err:
        raise ContractError(f"plugin '{name}' raised {type(err).__name__} under the contract check: {err}") from err


__all__ = [
    "ContractError",
    "check_declarations",
    "check_prior",
    "check_matcher",
    "check_evaluator",
    "check_dataset",
    "check_executor",
    "check_registered",
    "tiny_data",
    "CHECKS",
]
