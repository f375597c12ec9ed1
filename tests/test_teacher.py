"""Teacher soft labels: a network trained on the real training split, cached, for `ddbench run` and
`ddbench evaluate`; their scores keyed apart from hard-label ones."""

from __future__ import annotations

import io
import json

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console
from safetensors.torch import save_file

from ddbench.cli.main import cli, main
from ddbench.engine import full_data
from ddbench.engine.full_data import CACHE_DIR
from ddbench.engine.soft_labels import SoftLabels, Teacher, teacher_soft_labels
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.engine.teacher import teacher_labels
from ddbench.results.store import ResultsStore, store_path
from ddbench.running.pipeline import DataCache, run_spec


def _refuse_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*_args, **_kwargs):
        raise AssertionError("the teacher was trained again")

    monkeypatch.setattr(full_data, "train_on_real", no_training)


def test_teacher_is_cached_reused_and_retrained_when_corrupt(tiny_data, tmp_path, monkeypatch) -> None:
    images = tiny_data.normalise(tiny_data.train_images[:6])
    teacher = Teacher("convnet", epochs=1)
    said: list[str] = []
    first = teacher_labels(
        images, tiny_data, teacher, "dc-noaug", cache_dir=tmp_path, fingerprint=None, say=said.append
    )
    assert first.shape == (6, tiny_data.num_classes) and torch.allclose(first.sum(1), torch.ones(6))
    (cached,) = (tmp_path / CACHE_DIR).glob("*.safetensors")
    assert any("training convnet on 36 real training images, 1 epoch(s), seed 0" in line for line in said)

    with monkeypatch.context() as patch:
        _refuse_training(patch)
        assert torch.equal(
            teacher_labels(images, tiny_data, teacher, "dc-noaug", cache_dir=tmp_path, fingerprint=None), first
        )
        with pytest.raises(AssertionError, match="trained again"):  # another epoch count is another teacher
            teacher_labels(
                images, tiny_data, Teacher("convnet", epochs=2), "dc-noaug", cache_dir=tmp_path, fingerprint=None
            )

    cached.write_bytes(b"not a safetensors file")
    said.clear()
    again = teacher_labels(
        images, tiny_data, teacher, "dc-noaug", cache_dir=tmp_path, fingerprint=None, say=said.append
    )
    assert any("is unusable" in line and "training it again" in line for line in said), said
    assert torch.allclose(again, first, atol=1e-5)  # the same seed trains the same teacher
    with monkeypatch.context() as patch:  # the retrained teacher replaced the corrupt file
        _refuse_training(patch)
        teacher_labels(images, tiny_data, teacher, "dc-noaug", cache_dir=tmp_path, fingerprint=None)

    # a file under this key holding another network (e.g. copied by hand) is not trusted either
    other = Teacher("convnet", epochs=2)
    teacher_labels(images, tiny_data, other, "dc-noaug", cache_dir=tmp_path, fingerprint=None)
    files = sorted((tmp_path / CACHE_DIR).glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    files[-1].replace(cached)
    said.clear()
    teacher_labels(images, tiny_data, teacher, "dc-noaug", cache_dir=tmp_path, fingerprint=None, say=said.append)
    assert any("is unusable" in line and "'epochs': 2" in line for line in said), said


def test_soft_label_settings_and_keys() -> None:
    soft = teacher_soft_labels("teacher", "kl", None, None, train_per_class=500)
    assert soft.key == "soft=kl,T=4,teacher=convnet:2ep:500pc"
    assert SoftLabels.from_dict(json.loads(json.dumps(soft.to_dict()))) == soft
    spec = RunSpec(matcher="real", eval_epochs=50, soft_labels=soft.to_dict())
    assert spec.protocol_key() == "dc[epochs=50,soft=kl,T=4,teacher=convnet:2ep:500pc]"
    assert RunSpec.from_dict(spec.to_dict()).protocol_key() == spec.protocol_key()
    assert spec.run_id == RunSpec(matcher="real", eval_epochs=50).run_id  # the same set, another protocol
    with pytest.raises(Exception, match="come from a teacher"):
        RunSpec(soft_labels={"loss": "ce"})
    with pytest.raises(Exception, match="teacher or teacher:ARCH"):
        teacher_soft_labels("teachers", None, None, None)
    result = CliRunner().invoke(cli, ["run", "--soft-loss", "kl", "--dry-run"])
    assert result.exit_code != 0 and "--soft-loss applies to --soft-labels teacher only" in str(
        result.exception or result.output
    )


def test_run_and_evaluate_share_the_teacher(tmp_path, fmnist_slice, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    soft = teacher_soft_labels("teacher:convnet", "kl", 2.0, 1)
    spec = RunSpec(
        dataset="fashion-mnist",
        matcher="real",
        ipc=1,
        iterations=0,
        eval_epochs=2,
        eval_seeds=(0,),
        soft_labels=soft.to_dict(),
    )
    env = RunEnv(out=out, data_root=str(fmnist_slice), progress=False)
    console = Console(file=io.StringIO(), width=200)
    with ResultsStore(store_path(out)) as store:
        outcome = run_spec(spec, env, store, DataCache(env), console)
        scores = store.scores_frame()
    assert list(scores["protocol"]) == ["dc[epochs=2,soft=kl,T=2,teacher=convnet:1ep]"]
    assert json.loads(scores["protocol_json"].iloc[0])["soft_labels"]["teacher"]["arch"] == "convnet"
    assert "soft labels of a convnet teacher (1 epoch(s)" in console.file.getvalue()
    assert len(list((out / "cache" / CACHE_DIR).glob("*.safetensors"))) == 1

    # `ddbench evaluate` of that run's set with the same teacher: labels from the cached network
    _refuse_training(monkeypatch)
    argv = ["evaluate", str(outcome.run_dir), "--data-root", str(fmnist_slice), "--out", str(out), "--eval-epochs", "2", "--seeds", "1",
            "--no-progress", "--soft-labels", "teacher", "--teacher-epochs", "1", "--soft-loss", "kl", "--temperature", "2", "--name", "again"]  # fmt: skip
    try:
        main(argv)
    except SystemExit as exit_:
        assert not exit_.code, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "(protocol marked soft=kl,T=2,teacher=convnet:1ep)" in err, err
    with ResultsStore(store_path(out), read_only=True) as store:
        assert "dc[epochs=2,soft=kl,T=2,teacher=convnet:1ep]" in set(store.scores_frame()["protocol"])


def test_a_set_with_hard_labels_refuses_a_soft_loss_without_a_teacher(tmp_path, fmnist_slice, capsys) -> None:
    images = torch.rand(10, 1, 28, 28)
    path = tmp_path / "set.safetensors"
    save_file({"images": images, "labels": torch.arange(10)}, str(path))
    argv = ["evaluate", str(path), "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--out", str(tmp_path / "out"), "--soft-loss", "argmax",
            "--soft-labels", "teacher", "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "trains with --soft-loss ce or kl, not 'argmax'" in capsys.readouterr().err
