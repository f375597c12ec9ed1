"""A diverged evaluation seed costs only itself: the run's other scores are stored, the run fails
with a message that names what diverged and how to avoid it, and a resume evaluates only that seed."""

from __future__ import annotations

import pytest

from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.errors import NonFiniteLossError
from ddbench.results.store import ResultsStore
from ddbench.running import pipeline
from ddbench.running.identity import resolve_spec
from ddbench.running.pipeline import DataCache, run_spec


def test_a_diverged_seed_loses_only_itself(tmp_path, fmnist_slice, monkeypatch):
    real_evaluate = pipeline.evaluate_and_record_seeds
    calls: list[tuple[str, list[int]]] = []

    def diverging_seed_1(images, labels, data, evaluator, protocol, seeds, **kwargs):
        calls.append((evaluator, list(seeds)))
        if 1 in seeds:
            raise NonFiniteLossError("Training loss became nan in epoch 2/2 (lr 0.01)")
        return real_evaluate(images, labels, data, evaluator, protocol, seeds, **kwargs)

    spec = RunSpec(dataset="fashion-mnist", prior="pixel", matcher="real", ipc=1, evaluators=("convnet",),
                   eval_seeds=(0, 1, 2), eval_epochs=2, test_size=40)  # fmt: skip
    env = RunEnv(out=tmp_path, data_root=str(fmnist_slice), progress=False, eval_batch=False)
    resolved = resolve_spec(spec, env)
    monkeypatch.setattr(pipeline, "evaluate_and_record_seeds", diverging_seed_1)
    with ResultsStore(env.out / "results.sqlite") as store:
        with pytest.raises(NonFiniteLossError, match=r"1 evaluation\(s\) diverged.*2 score\(s\) are stored"):
            run_spec(resolved, env, store, DataCache(env))
        assert sorted(store.scores_frame().seed) == [0, 2]  # the seed after the diverged one ran too
    assert calls == [("convnet", [0]), ("convnet", [1]), ("convnet", [2])]

    calls.clear()
    monkeypatch.setattr(
        pipeline, "evaluate_and_record_seeds", lambda *a, **k: calls.append(a[5]) or real_evaluate(*a, **k)
    )
    with ResultsStore(env.out / "results.sqlite") as store:
        run_spec(resolved, env, store, DataCache(env))
        assert sorted(store.scores_frame().seed) == [0, 1, 2]
    assert calls == [[1]]  # the resume evaluated only what was missing


def test_the_divergence_message_names_a_remedy_that_exists():
    from click.testing import CliRunner

    from ddbench.cli.main import cli
    from ddbench.engine.training import check_finite_loss

    with pytest.raises(NonFiniteLossError) as caught:
        check_finite_loss(float("nan"), 80, 300, 0.01)
    message = str(caught.value)
    assert "epoch 81/300" in message and "--protocol glad" in message
    assert "--protocol" in CliRunner().invoke(cli, ["run", "--help"]).output
