"""The plugin contract (`ddbench.testing`) over every registered plugin of every family, and the
rules a plugin author meets: framed errors, a defined learning rate, warnings in run.log."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import Tensor

from ddbench import registry
from ddbench.cli.main import cli
from ddbench.engine.distill import Distiller
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.errors import PluginError
from ddbench.interfaces import DEFAULT_BASE_LR, LatentState, Matcher, Prior, RealSampler
from ddbench.running.executor import SweepTask, execute_task
from ddbench.testing import ContractError, check_matcher, check_prior, check_registered, tiny_data

#: small options so each check takes seconds on a CPU (a third-party plugin gets its defaults)
CHEAP_OPTIONS: dict[tuple[str, str], dict[str, object]] = {
    ("matcher", "dc"): {"batch_real": 4, "outer_loop": 1, "inner_loop": 1, "compile": False},
    ("matcher", "dm"): {"batch_real": 4, "compile": False},
    ("matcher", "mtt"): {
        "build_experts": True,
        "num_experts": 1,
        "expert_train_epochs": 2,
        "max_start_epoch": 1,
        "expert_epochs": 1,
        "syn_steps": 2,
    },  # fmt: skip
}

REGISTERED = [(family, name) for family in registry.FAMILIES for name in registry.plugin_names(family)]


@pytest.mark.parametrize(("family", "name"), REGISTERED, ids=[f"{f}:{n}" for f, n in REGISTERED])
def test_every_registered_plugin_keeps_the_contract(family, name, tmp_path):
    options = dict(CHEAP_OPTIONS.get((family, name), {}))
    if family == "matcher":
        options["cache_dir"] = tmp_path
    check_registered(family, name, **options)


def test_every_family_has_registered_plugins():
    assert {family for family, _ in REGISTERED} == set(registry.FAMILIES)


# ------------------------------------------------------- plugins as a third party writes them


class MeanVarianceMatcher(Matcher):
    """Per-class mean and variance of the pixels, augmented with one DSA seed for both sides."""

    name = "meanvar"
    description = "Matches per-class pixel means and variances."

    def __init__(self, batch_real: int = 4) -> None:
        self.batch_real = batch_real

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        total = images.new_zeros(())
        for c in torch.unique(labels).tolist():
            syn, ref = images[labels == c], real.class_batch(c, self.batch_real)
            if self.context.dsa is not None:
                seed = self.dsa_seed()
                syn, ref = self.context.dsa(syn, seed), self.context.dsa(ref, seed)
            total = (
                total
                + (syn.mean(0) - ref.mean(0)).pow(2).sum()
                + (syn.var(0, unbiased=False) - ref.var(0)).pow(2).sum()
            )
        return total

    def dsa_seed(self) -> int:
        return self.context.draw_seed()  # one seed for both sides, from the engine-seeded RNG


class DCTPrior(Prior):
    """Images as learnable coefficients of a fixed orthonormal basis; declares no base_lrs."""

    name = "dct"
    description = "Learnable coefficients of a fixed orthonormal basis."

    def setup(self, data, device) -> None:
        n = data.resolution
        self.basis = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(0)))[0].to(device)

    def init_state(self, real_images, labels, generator) -> LatentState:
        return LatentState(params={"coefficients": self.basis.T @ real_images @ self.basis})

    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        return self.basis @ state.params["coefficients"][indices] @ self.basis.T


class SetupFails(Prior):
    name = "broken-setup"
    description = "Fails in setup."

    def setup(self, data, device) -> None:
        {}["missing"]

    def init_state(self, real_images, labels, generator) -> LatentState:
        raise AssertionError("never reached")

    def generate(self, state, indices):
        raise AssertionError("never reached")


class ForgetsSuperSetup(MeanVarianceMatcher):
    name = "forgets-super"
    description = "Forgets to call super().setup."

    def setup(self, context) -> None:
        self.ready = True


class SeedsItself(MeanVarianceMatcher):
    """Draws its DSA seeds from a generator of its own, which the engine never seeds."""

    name = "own-seed"
    description = "Seeds its own generator."

    def setup(self, context) -> None:
        super().setup(context)
        self.own = torch.Generator().manual_seed(0)

    def dsa_seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (), generator=self.own))


def test_the_contract_kit_passes_a_third_party_prior_and_matcher():
    check_prior(DCTPrior)
    check_matcher(MeanVarianceMatcher)


def test_the_contract_kit_names_the_broken_rule():
    with pytest.raises(ContractError, match=r"calls super\(\).setup\(context\)"):
        check_matcher(ForgetsSuperSetup)
    with pytest.raises(ContractError, match="same engine seed gives the same loss"):
        check_matcher(SeedsItself)


class UnbiasedVariance(MeanVarianceMatcher):
    """torch.var's default (Bessel's correction) is NaN over one image: a run at IPC 1 fails."""

    description = "Matches unbiased per-class variances."

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        return sum((images[labels == c].var(0) - real.class_batch(c, 4).var(0)).pow(2).sum() for c in labels.unique())


class ResolvesAnUnknownOption(DCTPrior):
    """Resolves an option its __init__ does not take: the engine could not build it from that."""

    description = "Resolves an option it does not take."

    def effective_options(self, context):
        return {**self.options(), "basis_size": context.resolution}


class ResolvesAuto(MeanVarianceMatcher):
    """``batch_real="auto"`` resolved from the IPC, as a built-in matcher would."""

    description = "Resolves batch_real from the IPC."

    def __init__(self, batch_real: int | str = "auto") -> None:
        self.batch_real = batch_real

    def effective_options(self, context):
        options = self.options()
        if options["batch_real"] == "auto":
            options["batch_real"] = 4 * context.ipc
        return options

    def setup(self, context) -> None:
        super().setup(context)
        assert self.batch_real == 4 * context.ipc, "built from its effective options, as a run builds it"


class InheritsItsDescription(MeanVarianceMatcher):
    name = "inherits"


def test_the_contract_kit_requires_a_description_literal_in_the_class_body():
    """`ddbench plugins` reads descriptions from source; an inherited one would show as none."""
    with pytest.raises(ContractError, match="string literal in the class's own body"):
        check_matcher(InheritsItsDescription)


def test_the_contract_kit_builds_plugins_from_their_effective_options():
    check_matcher(ResolvesAuto)
    with pytest.raises(ContractError, match=r"effective_options returns a dict of __init__ options.*basis_size"):
        check_prior(ResolvesAnUnknownOption)


@pytest.mark.filterwarnings("ignore:var\\(\\)")  # the bug this test plants
def test_the_contract_kit_checks_ipc_1_where_a_variance_of_one_image_is_nan():
    check_matcher(UnbiasedVariance, ipc=2)  # passes at 2 images per class
    with pytest.raises(ContractError, match=r"loss is finite .*\(at IPC 1\)"):
        check_matcher(UnbiasedVariance)


def test_a_prior_without_base_lrs_gets_the_default_rate_and_lr_overrides(tmp_path):
    data = tiny_data()
    spec = RunSpec(dataset="tiny", prior="dct", matcher="meanvar", ipc=1, iterations=1)
    distiller = Distiller(spec, data, tmp_path, progress=False, prior=DCTPrior(), matcher=MeanVarianceMatcher())
    state = distiller._init_state()
    groups = {g["name"]: g["lr"] for g in distiller._optimizer(state).param_groups}
    assert groups == {"prior.coefficients": DEFAULT_BASE_LR * MeanVarianceMatcher.lr_scale}
    spec = RunSpec(dataset="tiny", prior="dct", matcher="meanvar", ipc=1, iterations=1, lrs={"coefficients": 0.5})
    distiller = Distiller(spec, data, tmp_path, progress=False, prior=DCTPrior(), matcher=MeanVarianceMatcher())
    assert {g["name"]: g["lr"] for g in distiller._optimizer(distiller._init_state()).param_groups} == {
        "prior.coefficients": 0.5
    }


def test_an_exception_in_a_plugins_setup_is_one_framed_error(tmp_path):
    spec = RunSpec(dataset="tiny", prior="broken-setup", matcher="meanvar", ipc=1, iterations=1)
    distiller = Distiller(
        spec, tiny_data(), tmp_path, progress=False, prior=SetupFails(), matcher=MeanVarianceMatcher()
    )
    with pytest.raises(PluginError) as info:
        distiller.run()
    message = str(info.value)
    assert "prior plugin 'broken-setup'" in message and "failed in setup: KeyError" in message
    assert "test_plugin_contract.py" in message and "\n" not in message  # where, in one line


def test_an_exception_in_a_plugins_init_names_the_plugin_and_its_distribution(monkeypatch):
    from ddbench_plugins.priors.pixel import PixelPrior

    def broken_init(self, init: str = "real") -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(PixelPrior, "__init__", broken_init)
    with pytest.raises(
        PluginError, match=r"The prior plugin 'pixel' \(ddbench [0-9.]+\) failed in __init__: RuntimeError: boom"
    ):
        registry.create("prior", "pixel")


def test_plugins_lists_each_plugins_description():
    # read from the source without importing the plugin, and the same as the class says
    for family, name in REGISTERED:
        declared = registry.get_plugin_class(family, name).description
        assert registry.static_description(registry.plugin_info(family, name)) == declared, (family, name)
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "description" in result.output and "Raw pixels:" in result.output


def test_plugins_says_when_a_description_cannot_be_read_from_source(monkeypatch):
    """A computed or inherited description is invisible to the listing: say so instead of a blank."""
    monkeypatch.setattr(registry, "static_description", lambda info: "")
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert '(none: no description = "..." in its class body)' in result.output


class WarnsPrior(DCTPrior):
    """A prior from another distribution that warns through its own logger and through `warnings`."""

    __module__ = "ddbench_dct_example.prior"
    name = "warns"
    description = "Warns while it sets up."

    def setup(self, data, device) -> None:
        super().setup(data, device)
        logging.getLogger("ddbench_dct_example").warning("basis is not learnable here")
        warnings.warn("coefficients may overflow in fp16", stacklevel=1)


def test_a_third_party_plugins_warnings_reach_run_log(tmp_path, monkeypatch, fmnist_available):
    # the engine builds plugins through the registry: hand it these classes by name
    real_create = registry.create
    plugins = {("prior", "warns"): WarnsPrior, ("matcher", "meanvar"): MeanVarianceMatcher}
    monkeypatch.setattr("ddbench.engine.distill.registry.create", lambda family, name, **o: plugins[(family, name)](**o)
                        if (family, name) in plugins else real_create(family, name, **o))  # fmt: skip
    spec = RunSpec(prior="warns", matcher="meanvar", ipc=1, iterations=1, evaluators=("convnet",), eval_seeds=(0,),
                   eval_epochs=1, train_per_class=5, test_size=20, identity={"lrs": {}})  # fmt: skip
    env = RunEnv(out=tmp_path, progress=False)
    result = execute_task(SweepTask(spec=spec.to_dict(), env=env))
    assert result.state == "done", result.error
    log = Path(env.run_dir(spec) / "run.log").read_text()
    assert "ddbench_dct_example: basis is not learnable here" in log
    assert "coefficients may overflow in fp16" in log
