"""Protocols, the shared training loop and the evaluation engine, on tiny data."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from ddbench_plugins.evaluators.convnet import ConvNet, ConvNetEvaluator
from torch import nn

from ddbench.engine.dsa import DSA
from ddbench.engine.evaluate import EvalResult, evaluate_synthetic, round_epochs
from ddbench.engine.protocols import PROTOCOLS, EvalProtocol, get_protocol
from ddbench.engine.training import lr_at_epoch, test_accuracy, train_classifier
from ddbench.errors import InvalidOptionError, NonFiniteLossError
from ddbench.interfaces import RealData


def _tiny_data(num_classes: int = 3, per_class: int = 10, res: int = 16, seed: int = 0) -> RealData:
    """Uint8 images whose mean brightness encodes the class (learnable in a few steps)."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(num_classes).repeat_interleave(n)
        base = (labels.float() / (num_classes - 1) * 160 + 40).view(-1, 1, 1, 1)
        noise = torch.randn(len(labels), 1, res, res, generator=gen) * 25
        return (base + noise).clamp(0, 255).to(torch.uint8), labels

    train_x, train_y = split(per_class)
    test_x, test_y = split(per_class)
    return RealData("tiny", train_x, train_y, test_x, test_y, [f"c{i}" for i in range(num_classes)], (0.5,), (0.25,))


def _protocol(**changes) -> EvalProtocol:
    """A small training protocol for tiny data; ``changes`` replace its fields."""
    fields = dict(name="tiny", epochs=3, lr=0.01, batch_size=8, momentum=0.9, weight_decay=5e-4, schedule="step")
    return EvalProtocol(**{"dsa": False, **fields, **changes})


def _fit(
    seed: int, *, epochs: int = 3, dsa: Callable | None = None, init_seed: int = 0, **changes
) -> tuple[nn.Module, object]:
    data = _tiny_data()
    torch.manual_seed(init_seed)
    model = ConvNet(1, 3, 16, width=8)
    stats = train_classifier(
        model,
        data.normalise(data.train_images),
        data.train_labels,
        _protocol(epochs=epochs, dsa=dsa is not None, **changes),
        seed=seed,
        device="cpu",
        augment=dsa,
    )
    return model, stats


# ------------------------------------------------------------------------------------- protocols


def test_protocol_values():
    dc, glad = get_protocol("dc"), get_protocol("glad")
    assert (dc.epochs, dc.batch_size, dc.lr, dc.momentum, dc.weight_decay, dc.schedule, dc.dsa) == (
        1000,
        256,
        0.01,
        0.9,
        5e-4,
        "step",
        True,
    )
    assert (glad.epochs, glad.batch_size, glad.lr, glad.momentum, glad.weight_decay, glad.schedule, glad.dsa) == (
        1000,
        256,
        1e-3,
        0.9,
        5e-4,
        "warmup_cosine",
        True,
    )
    noaug = PROTOCOLS["dc-noaug"]
    assert (noaug.epochs, noaug.dsa, noaug.lr) == (300, False, 0.01)


def test_protocol_overrides_and_errors():
    dc = get_protocol("dc")
    short = dc.with_overrides(epochs=20, lr=None)
    assert (short.epochs, short.lr, short.name) == (20, 0.01, "dc") and dc.epochs == 1000
    with pytest.raises(InvalidOptionError, match="no field"):
        dc.with_overrides(epoch=3)
    with pytest.raises(InvalidOptionError, match="Did you mean 'glad'"):
        get_protocol("gald")
    with pytest.raises(InvalidOptionError, match="schedule"):
        EvalProtocol("x", 1, 1, 0.1, 0.0, 0.0, "linear", False)
    with pytest.raises(AttributeError):
        dc.epochs = 3  # frozen


def test_lr_schedules():
    assert [lr_at_epoch("step", 1.0, e, 4) for e in range(4)] == [1.0, 1.0, 0.1, 0.1]
    assert lr_at_epoch("constant", 0.3, 7, 10) == 0.3
    warm = [lr_at_epoch("warmup_cosine", 1.0, e, 10) for e in range(10)]
    assert warm[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert warm[5] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(warm[5:], warm[6:]))  # cosine decay over the second half
    assert warm[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 5)))


# --------------------------------------------------------------------------------- training loop


def test_loss_falls_on_a_tiny_batch():
    _, stats = _fit(0, epochs=6, lr=0.02)
    assert len(stats.losses) == 6
    assert stats.losses[-1] < 0.3 * stats.losses[0]


def test_seeded_run_is_bit_for_bit_repeatable():
    a, _ = _fit(3, dsa=DSA())
    b, _ = _fit(3, dsa=DSA())
    c, _ = _fit(4, dsa=DSA())  # same init, other shuffling and DSA draws
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_uint8_images_with_normalise_train_like_float_images():
    data = _tiny_data()
    models = []
    for images, normalise in ((data.train_images, data.normalise), (data.normalise(data.train_images), None)):
        torch.manual_seed(0)
        model = ConvNet(1, 3, 16, width=8)
        protocol = _protocol(epochs=2, weight_decay=0.0, schedule="constant", dsa=True)
        train_classifier(model, images, data.train_labels, protocol, seed=1, device="cpu", normalise=normalise)
        models.append(model)
    assert all(torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters()))
    with pytest.raises(InvalidOptionError, match="normalise"):
        protocol = _protocol(epochs=1, momentum=0.0, weight_decay=0.0, schedule="constant")
        train_classifier(
            ConvNet(1, 3, 16, width=4), data.train_images, data.train_labels, protocol, seed=0, device="cpu"
        )


def test_dsa_is_called_once_per_batch_with_step_derived_seeds():
    seeds: list[int] = []

    def spy(x: torch.Tensor, seed: int) -> torch.Tensor:
        seeds.append(seed)
        return x

    _fit(0, epochs=2, dsa=spy)  # 30 images, batch 8 → 4 batches per epoch
    assert len(seeds) == 8 and len(set(seeds)) == 8
    again: list[int] = []
    _fit(0, epochs=2, dsa=lambda x, s: again.append(s) or x)
    assert again == seeds


def test_epoch_hook_schedule_and_soft_labels():
    calls: list[tuple[int, float]] = []
    data = _tiny_data()
    torch.manual_seed(0)
    model = ConvNet(1, 3, 16, width=4)
    soft = torch.nn.functional.one_hot(data.train_labels, 3).float() * 0.9 + 0.1 / 3
    stats = train_classifier(
        model, data.normalise(data.train_images), soft,
        _protocol(epochs=4, lr=0.1, batch_size=16, momentum=0.0, weight_decay=0.0), seed=0, device="cpu",
        on_epoch_end=lambda e, loss: calls.append((e, loss)),
    )  # fmt: skip
    assert [e for e, _ in calls] == [0, 1, 2, 3] and [loss for _, loss in calls] == stats.losses
    assert stats.train_accuracy is not None and 0.0 <= stats.train_accuracy <= 1.0


def test_diverging_loss_raises_with_the_fix():
    data = _tiny_data()
    images = data.normalise(data.train_images)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        protocol = _protocol(epochs=1, batch_size=64, momentum=0.0, weight_decay=0.0, schedule="constant")
        train_classifier(ConvNet(1, 3, 16, width=4), images, data.train_labels, protocol, seed=0, device="cpu")


class _Constant(nn.Module):
    """Always predicts class ``k`` — its accuracy is the share of class ``k``."""

    def __init__(self, k: int, classes: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(k), classes).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_test_accuracy_batches_and_restores_mode():
    data = _tiny_data(per_class=7)
    model = _Constant(1, 3).train()
    acc = test_accuracy(model, data.test_images, data.test_labels, data.normalise, batch_size=4, device="cpu")
    assert acc == pytest.approx(1 / 3)
    assert model.training
    float_acc = test_accuracy(model, data.normalise(data.test_images), data.test_labels, device="cpu")
    assert float_acc == acc
    with pytest.raises(InvalidOptionError, match="normalise"):
        test_accuracy(model, data.test_images, data.test_labels, None, device="cpu")


# ----------------------------------------------------------------------------- evaluation engine


def _synthetic(data: RealData, per_class: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.cat([data.class_indices(c)[:per_class] for c in range(data.num_classes)])
    return data.normalise(data.train_images[idx]), data.train_labels[idx]


SMALL = {"width": 16}  # a narrow ConvNet keeps the engine tests fast


def test_evaluate_synthetic_returns_sensible_fields():
    data = _tiny_data()
    images, labels = _synthetic(data)
    result = evaluate_synthetic(
        images, labels, data, "convnet", "dc", seed=0, device="cpu", epochs=12, evaluator_options=SMALL
    )
    assert isinstance(result, EvalResult)
    assert result.evaluator == "convnet" and result.seed == 0 and result.to_dict()["accuracy"] == result.accuracy
    assert result.protocol["name"] == "dc" and result.protocol["epochs"] == 12 and result.protocol["lr"] == 0.01
    assert result.accuracy > 0.6  # brightness classes: far above chance (1/3) after a few epochs
    assert result.accuracy_max is None
    assert result.train_seconds > 0 and result.eval_seconds > 0 and result.peak_memory_bytes > 0
    again = evaluate_synthetic(
        images, labels, data, "convnet", "dc", seed=0, device="cpu", epochs=12, evaluator_options=SMALL
    )
    assert again.accuracy == result.accuracy  # seeded init, shuffling and DSA


def test_report_max_and_learning_rate_precedence(monkeypatch):
    data = _tiny_data()
    images, labels = _synthetic(data, 2)
    best = evaluate_synthetic(
        images, labels, data, "convnet", "glad", seed=1, device="cpu", epochs=4, report="max", evaluator_options=SMALL
    )
    assert best.accuracy_max is not None and best.accuracy_max >= best.accuracy
    assert best.protocol["lr"] == 1e-3 and best.protocol["schedule"] == "warmup_cosine"
    monkeypatch.setattr(ConvNetEvaluator, "protocol_lrs", {"glad": 1e-4})
    overridden = evaluate_synthetic(
        images, labels, data, "convnet", "glad", seed=1, device="cpu", epochs=1, evaluator_options=SMALL
    )
    assert overridden.protocol["lr"] == 1e-4  # the evaluator's own lr for this protocol
    learned = evaluate_synthetic(
        images,
        labels,
        data,
        "convnet",
        get_protocol("glad"),
        seed=1,
        device="cpu",
        epochs=1,
        lr=0.05,
        evaluator_options=SMALL,
    )
    assert learned.protocol["lr"] == 0.05  # an explicit lr (MTT's distilled lr) wins


def test_round_epochs_spread_over_training():
    assert round_epochs(1000) == {e for e in range(99, 999, 100)}
    assert round_epochs(5) == {0, 1, 2, 3}
    assert round_epochs(1) == set()


def test_evaluate_rejects_mismatched_inputs():
    data = _tiny_data()
    images, labels = _synthetic(data)
    with pytest.raises(InvalidOptionError, match="shape"):
        evaluate_synthetic(images[:, :, :8, :8], labels, data, "convnet", "dc", seed=0, device="cpu", epochs=1)
    with pytest.raises(InvalidOptionError, match="labels in"):
        evaluate_synthetic(images, labels + 5, data, "convnet", "dc", seed=0, device="cpu", epochs=1)
    with pytest.raises(InvalidOptionError, match="report"):
        evaluate_synthetic(images, labels, data, "convnet", "dc", seed=0, device="cpu", report="best")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_evaluate_and_uint8_training_on_cuda():
    data = _tiny_data()
    images, labels = _synthetic(data)
    result = evaluate_synthetic(
        images, labels, data, "convnet", "dc", seed=0, device="cuda", epochs=12, evaluator_options=SMALL
    )
    assert result.accuracy > 0.6 and result.peak_memory_bytes > 0
    torch.manual_seed(0)
    model = ConvNet(1, 3, 16, width=8)
    protocol = _protocol(epochs=2, weight_decay=0.0, schedule="constant", dsa=True)
    stats = train_classifier(
        model, data.train_images, data.train_labels, protocol, seed=1, device="cuda", normalise=data.normalise
    )
    assert next(model.parameters()).is_cuda and len(stats.losses) == 2
