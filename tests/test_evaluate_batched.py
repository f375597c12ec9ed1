"""Several seeds as one batched model (`ddbench.engine.seed_batching`) against the sequential path, on tiny data.

Tolerance: a seed's batched run differs from its sequential run only by floating-point summation
order, so after a few epochs its parameters agree to ``PARAM_RTOL`` (relative, over all
parameters) and its test accuracy to within one test image; repeated batched runs agree exactly.
A wrong initialisation, data order or DSA draw moves the parameters by far more than that.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_data

from ddbench import registry
from ddbench.engine import evaluate as evaluate_module
from ddbench.engine.evaluate import evaluate_seeds, evaluate_synthetic, resolve_batched
from ddbench.engine.protocols import EvalProtocol
from ddbench.engine.seed_batching import StackedNetworks, train_stacked
from ddbench.engine.training import train_classifier
from ddbench.errors import InvalidOptionError, NonFiniteLossError
from ddbench.interfaces import Evaluator
from ddbench.testing import ContractError, check_evaluator

SEEDS = (0, 1, 2)
PARAM_RTOL = 1e-4
TINY_CONVNET = {"width": 8}
TINY_VIT = {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16}
TRAINING = EvalProtocol(
    name="tiny", epochs=4, lr=0.01, batch_size=8, momentum=0.9, weight_decay=5e-4, schedule="step", dsa=True
)


def _networks(evaluator: str, options: dict, seeds=SEEDS) -> list[torch.nn.Module]:
    plugin = registry.create("evaluator", evaluator, **options)
    networks = []
    for seed in seeds:
        torch.manual_seed(seed)
        networks.append(plugin.build(1, 3, 16))
    return networks


def _flat(network: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in network.state_dict().values()])


def _train_both(evaluator: str, options: dict, loss_fn=None) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """Each seed trained alone (train_classifier) and all seeds as one stacked model, same settings."""
    data = make_tiny_data(num_classes=3, per_class=12, res=16)
    images, labels = data.normalise(data.train_images), data.train_labels
    if loss_fn is not None:
        labels = F.one_hot(labels, 3).float() * 0.8 + 0.2 / 3
    sequential = _networks(evaluator, options)
    for seed, network in zip(SEEDS, sequential):
        train_classifier(network, images, labels, TRAINING, seed=seed, device="cpu", loss_fn=loss_fn)
    batched = _networks(evaluator, options)
    stack = StackedNetworks(batched)
    train_stacked(stack, images, labels, TRAINING, seeds=SEEDS, device="cpu", loss_fn=loss_fn)
    stack.unstack_into(batched)
    return sequential, batched


def _relative_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return float((_flat(a) - _flat(b)).norm() / _flat(a).norm())


@pytest.mark.parametrize(
    ("evaluator", "options"),
    [("convnet", TINY_CONVNET), ("convnet", {**TINY_CONVNET, "norm": "batchnorm"})],
)
def test_each_seed_trains_as_its_sequential_run(evaluator, options):
    sequential, batched = _train_both(evaluator, options)
    for seq, bat in zip(sequential, batched):
        assert _relative_gap(seq, bat) < PARAM_RTOL
    # the seeds themselves differ by far more: the comparison above can tell them apart
    assert _relative_gap(sequential[0], batched[1]) > 0.1


def test_soft_label_loss_trains_each_seed_as_alone():
    def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    sequential, batched = _train_both("convnet", TINY_CONVNET, loss_fn=soft_cross_entropy)
    for seq, bat in zip(sequential, batched):
        assert _relative_gap(seq, bat) < PARAM_RTOL


def _evaluate(data, batched: bool, evaluator: str = "convnet", options=TINY_CONVNET, **kwargs):
    images = data.normalise(data.train_images)
    return evaluate_seeds(
        images, data.train_labels, data, evaluator, "dc", SEEDS, device="cpu", epochs=6,
        evaluator_options=options, batched=batched, **kwargs,
    )  # fmt: skip


def test_batched_scores_agree_with_sequential_per_seed(tiny_data):
    sequential = _evaluate(tiny_data, batched=False, report="max")
    batched = _evaluate(tiny_data, batched=True, report="max")
    one_image = 1 / len(tiny_data.test_labels)
    assert [r.seed for r in batched] == list(SEEDS)
    assert all(r.batched for r in batched) and not any(r.batched for r in sequential)
    for seq, bat in zip(sequential, batched):
        assert abs(seq.accuracy - bat.accuracy) <= one_image + 1e-12
        assert abs(seq.accuracy_max - bat.accuracy_max) <= one_image + 1e-12
        assert seq.protocol == bat.protocol


def test_batched_runs_are_exactly_repeatable(tiny_data):
    first, second = _evaluate(tiny_data, batched=True), _evaluate(tiny_data, batched=True)
    assert [r.accuracy for r in first] == [r.accuracy for r in second]
    a, b = _networks("convnet", TINY_CONVNET), _networks("convnet", TINY_CONVNET)
    images, labels = tiny_data.normalise(tiny_data.train_images), tiny_data.train_labels
    for networks in (a, b):
        stack = StackedNetworks(networks)
        train_stacked(stack, images, labels, TRAINING, seeds=SEEDS, device="cpu")
        stack.unstack_into(networks)
    for x, y in zip(a, b):
        assert torch.equal(_flat(x), _flat(y))


def test_sequential_switch_is_the_single_seed_path(tiny_data):
    results = _evaluate(tiny_data, batched=False)
    images = tiny_data.normalise(tiny_data.train_images)
    for result in results:
        alone = evaluate_synthetic(images, tiny_data.train_labels, tiny_data, "convnet", "dc", seed=result.seed,
                                   device="cpu", epochs=6, evaluator_options=TINY_CONVNET)  # fmt: skip
        assert alone.accuracy == result.accuracy


def test_network_with_dropout_falls_back_and_says_so_once(tiny_data, caplog, monkeypatch):
    monkeypatch.setattr(evaluate_module, "_FALLBACKS_SAID", set())
    with caplog.at_level(logging.WARNING, logger="ddbench.engine.evaluate"):
        first = _evaluate(tiny_data, batched=True, evaluator="vit", options=TINY_VIT)
        second = _evaluate(tiny_data, batched=True, evaluator="vit", options=TINY_VIT)
    said = [r.getMessage() for r in caplog.records if "not batched" in r.getMessage()]
    assert len(said) == 1 and "vit" in said[0] and "dropout" in said[0]
    assert not any(r.batched for r in first + second)
    assert [r.accuracy for r in first] == [r.accuracy for r in second]


def test_vit_without_dropout_batches(tiny_data, caplog):
    options = {**TINY_VIT, "dropout": 0.0, "emb_dropout": 0.0}
    with caplog.at_level(logging.WARNING, logger="ddbench.engine.evaluate"):
        results = _evaluate(tiny_data, batched=True, evaluator="vit", options=options)
    assert all(r.batched for r in results)
    assert not [r for r in caplog.records if "not batched" in r.getMessage()]


def test_a_random_forward_is_refused_not_silently_batched():
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
    stack = StackedNetworks([network, network])
    with pytest.raises(RuntimeError, match="random"):
        stack.forward(torch.randn(2, 3, 4))


def test_diverging_seed_is_named(tiny_data):
    images = tiny_data.normalise(tiny_data.train_images) * 1e6
    with pytest.raises(NonFiniteLossError, match="seed"):
        evaluate_seeds(images, tiny_data.train_labels, tiny_data, "convnet", "dc", SEEDS, device="cpu", epochs=3,
                       lr=1e6, evaluator_options=TINY_CONVNET, batched=True)  # fmt: skip


def test_batching_by_default_only_on_a_gpu():
    assert not resolve_batched(None, "cpu") and resolve_batched(None, "cuda")
    assert resolve_batched(True, "cpu") and not resolve_batched(False, "cuda")


def test_repeated_seeds_are_refused(tiny_data):
    images = tiny_data.normalise(tiny_data.train_images)
    with pytest.raises(InvalidOptionError, match="distinct"):
        evaluate_seeds(images, tiny_data.train_labels, tiny_data, "convnet", "dc", (0, 0), device="cpu", epochs=1)


class _LinearWithDropout(torch.nn.Module):
    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.linear, self.dropout = torch.nn.Linear(features, num_classes), torch.nn.Dropout(0.5)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(self.embed(x)))


class _ClaimsBatchedSeeds(Evaluator):
    """Declares batched seeds, yet draws dropout masks in its forward."""

    name = "claims-batched"
    description = "A linear network with dropout that wrongly allows batched seeds."
    batched_seeds = True

    def build(self, channels: int, num_classes: int, resolution: int) -> torch.nn.Module:
        return _LinearWithDropout(channels * resolution * resolution, num_classes)


def test_contract_check_catches_a_false_batching_claim():
    with pytest.raises(ContractError, match="batching_obstacle"):
        check_evaluator(_ClaimsBatchedSeeds, resolution=8)


def test_a_run_stores_batched_scores_under_the_same_key(tmp_path, fmnist_slice, monkeypatch):
    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.results.store import ResultsStore
    from ddbench.running.identity import resolve_spec
    from ddbench.running.pipeline import DataCache, run_spec

    batched_calls = []

    def counted(*args, **kwargs):
        batched_calls.append(kwargs["seeds"])
        return train_stacked(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train_stacked", counted)

    spec = RunSpec(dataset="fashion-mnist", prior="pixel", matcher="real", ipc=1, evaluators=("convnet",),
                   eval_seeds=SEEDS, eval_epochs=2, test_size=40)  # fmt: skip
    stored = {}
    for eval_batch in (False, True):
        env = RunEnv(out=tmp_path / str(eval_batch), data_root=str(fmnist_slice), progress=False, eval_batch=eval_batch)
        resolved = resolve_spec(spec, env)
        with ResultsStore(env.out / "results.sqlite") as store:
            run_spec(resolved, env, store, DataCache(env))
            scores = store.scores_frame()
        stored[eval_batch] = scores.set_index("seed")[["run_id", "protocol", "accuracy"]].sort_index()
    sequential, batched = stored[False], stored[True]
    assert batched_calls == [list(SEEDS)]  # --eval-batch trained the three seeds as one model, once
    assert list(batched.index) == list(SEEDS)
    assert (batched[["run_id", "protocol"]] == sequential[["run_id", "protocol"]]).all().all()  # one identity
    assert ((batched.accuracy - sequential.accuracy).abs() <= 1 / 40 + 1e-12).all()
