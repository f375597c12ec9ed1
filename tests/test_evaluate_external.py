"""`ddbench evaluate` and `ddbench.evaluate_set`: sets written by other tools, scored into the store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

import ddbench
from ddbench.cli.main import cli, main
from ddbench.results.store import ResultsStore
from ddbench.running import record_score

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _set(ipc: int = 1, seed: int = 0, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] with a class-dependent brightness, and their labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(ipc)
    images = (
        labels.float().view(-1, 1, 1, 1) / 10 + 0.3 * torch.rand(len(labels), 1, size, size, generator=gen)
    ).clamp(0, 1)
    return images, labels


def _evaluate(capsys, fmnist_slice, out, *args: str) -> tuple[int, str]:
    argv = ["evaluate", *args, "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--out", str(out),
            "--eval-epochs", "2", "--seeds", "1", "--no-progress"]  # fmt: skip
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    return code, capsys.readouterr().err


def _scores(out):
    with ResultsStore(out / "results.sqlite", read_only=True) as store:
        return store.scores_frame(), store.runs_frame()


def test_dc_repository_file_one_row_per_experiment_and_rescoring_reuses(tmp_path, fmnist_slice, capsys, monkeypatch):
    (a, labels), (b, _) = _set(seed=0), _set(seed=1)
    path = tmp_path / "res_DM_FashionMNIST_ConvNet_1ipc.pt"
    # exactly as the DC/DSA/DM repository saves it: normalised images, one [images, labels] per experiment
    data = [[(a - FMNIST_MEAN) / FMNIST_STD, labels], [(b - FMNIST_MEAN) / FMNIST_STD, labels.clone()]]
    torch.save({"data": data, "accs_all_exps": {"ConvNet": [0.52, 0.55]}}, path)
    out = tmp_path / "out"
    code, err = _evaluate(capsys, fmnist_slice, out, str(path), "--name", "dm-official")
    assert code == 0, err
    assert "normalised with fashion-mnist mean/std" in err
    scores, runs = _scores(out)
    assert sorted(runs["matcher"]) == ["external:dm-official#0", "external:dm-official#1"]
    assert set(runs["prior"]) == {"external"} and set(runs["ipc"]) == {1}
    assert len(scores) == 2 and set(scores["protocol"]) == {"dc[epochs=2]"}
    provenance = json.loads(runs["spec_json"].iloc[0])["external"]
    assert (
        provenance["format"] == "dc" and provenance["source"] == str(path) and len(provenance["content_sha256"]) == 64
    )
    assert provenance["range"] == "normalized"

    def no_training(*_args, **_kwargs):
        raise AssertionError("re-scoring the same file trained again")

    monkeypatch.setattr(record_score, "evaluate_seeds", no_training)
    code, err = _evaluate(capsys, fmnist_slice, out, str(path), "--name", "dm-official", "--experiment", "1")
    assert code == 0, err
    assert "(stored)" in err and "1 reused from the store" in err and "(dc[epochs=2])" in err
    assert len(_scores(out)[0]) == 2

    board = CliRunner().invoke(cli, ["leaderboard", "--out", str(out), "--format", "markdown"])
    assert board.exit_code == 0, board.output
    assert "| external" in board.output and "external:dm-official#0" in board.output


def test_class_folders_of_any_size_are_resized_and_round_trip_through_export(tmp_path, fmnist_slice, capsys):
    images, labels = _set(ipc=2, size=40)
    root = tmp_path / "pngs"
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        folder = root / (CLASSES[label].replace("/", "_") if label % 2 else str(label))  # names and indices
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().byte().numpy()).save(folder / f"{i}.png")
    out = tmp_path / "out"
    code, err = _evaluate(capsys, fmnist_slice, out, str(root), "--name", "pngs")
    assert code == 0, err
    assert "resized 40×40 → 28×28" in err and "10 class folder(s), 20 image(s)" in err
    _, runs = _scores(out)
    provenance = json.loads(runs["spec_json"].iloc[0])["external"]
    assert (
        provenance["format"] == "folder"
        and provenance["resize"].startswith("40×40 → 28×28")
        and runs["ipc"].iloc[0] == 2
    )

    # a stored run directory is a ddbench set: export it to PNGs (8-bit: the resized values are
    # quantised, so a new set) and score them; exporting that one again is exact, so it is reused
    code, err = _evaluate(capsys, fmnist_slice, out, runs["run_dir"].iloc[0], "--export", str(tmp_path / "again"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "again").iterdir())[:2] == ["0_T-shirt_top", "1_Trouser"]
    code, err = _evaluate(capsys, fmnist_slice, out, str(tmp_path / "again"), "--name", "pngs-again")
    assert code == 0 and "resized" not in err, err
    again_dir = _scores(out)[1].set_index("matcher").loc["external:pngs-again", "run_dir"]
    code, err = _evaluate(capsys, fmnist_slice, out, again_dir, "--export", str(tmp_path / "again2"))
    assert code == 0, err
    code, err = _evaluate(capsys, fmnist_slice, out, str(tmp_path / "again2"), "--name", "pngs-2")
    assert code == 0, err
    assert "already stored as 'external:pngs-again'" in err and "1 reused from the store" in err


def test_safetensors_with_soft_labels_are_marked_by_their_loss(tmp_path, fmnist_slice, capsys):
    images, labels = _set()
    soft = torch.nn.functional.one_hot(labels, 10).float() * 0.7 + 0.03
    path = tmp_path / "set.safetensors"
    save_file({"images": images.contiguous(), "labels": soft.contiguous()}, str(path))
    out = tmp_path / "out"
    code, err = _evaluate(capsys, fmnist_slice, out, str(path), "--name", "soft")
    assert code == 0, err
    assert "range: detected [0, 1]" in err and "soft cross-entropy" in err
    code, err = _evaluate(capsys, fmnist_slice, out, str(path), "--name", "soft", "--soft-loss", "kl")
    assert code == 0, err
    code, err = _evaluate(capsys, fmnist_slice, out, str(path), "--name", "soft", "--soft-loss", "argmax")
    assert code == 0, err
    scores, runs = _scores(out)
    assert sorted(scores["protocol"]) == ["dc[epochs=2,soft=ce]", "dc[epochs=2,soft=kl,T=4]", "dc[epochs=2]"]
    assert len(runs) == 2  # soft labels and their argmax are different sets
    assert json.loads(scores[scores["protocol"].str.contains("kl")]["protocol_json"].iloc[0])["soft_labels"] == {
        "loss": "kl",
        "temperature": 4.0,
    }


def test_mtt_files_bring_their_learned_lr(tmp_path, fmnist_slice, capsys):
    images, labels = _set()
    logged = tmp_path / "logged_files"
    logged.mkdir()
    torch.save((images - FMNIST_MEAN) / FMNIST_STD, logged / "images_best.pt")
    torch.save(labels, logged / "labels_best.pt")
    torch.save(torch.tensor(0.02), logged / "synthetic_lr_best.pt")
    torch.save(images, logged / "images_100.pt")  # an earlier iteration, not chosen
    torch.save(labels, logged / "labels_100.pt")
    out = tmp_path / "out"
    code, err = _evaluate(capsys, fmnist_slice, out, str(logged), "--name", "mtt-official")
    assert code == 0, err
    assert "images_best.pt" in err and "learned lr 0.02" in err
    scores, _ = _scores(out)
    assert json.loads(scores["protocol_json"].iloc[0])["lr"] == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda p: p.write_text("hello"), "Cannot read"),
        (lambda p: torch.save(torch.zeros(2, 1, 28, 28), p), "one tensor and no labels"),
        (
            lambda p: torch.save({"images": torch.rand(10, 1, 28, 28), "labels": torch.arange(9)}, p),
            "10 images and 9 labels",
        ),
        (
            lambda p: torch.save({"images": torch.rand(10, 1, 28, 28), "labels": torch.arange(10) + 3}, p),
            "labels in 0..9",
        ),
        (
            lambda p: torch.save({"images": torch.rand(10, 1, 28, 28), "labels": torch.rand(10, 7)}, p),
            "soft labels (N, 10)",
        ),
        (lambda p: torch.save({"images": torch.rand(10, 3, 28, 28), "labels": torch.arange(10)}, p), "1 channel(s)"),
        (lambda p: torch.save({"pixels": torch.rand(10, 1, 28, 28)}, p), "expected an image tensor"),
    ],
)
def test_wrong_files_are_one_line_errors(tmp_path, fmnist_slice, capsys, write, expected):
    path = tmp_path / ("set.txt" if expected == "Cannot read" else "set.pt")
    write(path)
    code, err = _evaluate(capsys, fmnist_slice, tmp_path / "out", str(path))
    last = err.strip().splitlines()[-1]  # what was read may be said first; the error is one line
    assert code == 2 and last.startswith("error:") and expected in last, err
    if "Cannot read" in err:
        assert "Accepted: a class-per-folder image tree" in err


def test_class_folders_that_match_no_class_are_an_error(tmp_path, fmnist_slice, capsys):
    for name in ("Trouser", "cats"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp_path / "tree" / name / "0.png")
    code, err = _evaluate(capsys, fmnist_slice, tmp_path / "out", str(tmp_path / "tree"))
    assert code == 2 and "['cats']" in err and "or its index 0–9" in err and err.strip().count("\n") == 0, err


def test_evaluate_set_python_call_records_and_reuses(tmp_path, fmnist_slice):
    images, labels = _set()
    common = dict(dataset="fashion-mnist", eval_epochs=2, seeds=2, data_root=str(fmnist_slice), verbose=False)
    frame = ddbench.evaluate_set(images, labels, evaluators=["convnet"], **common)
    assert list(frame["seed"]) == [0, 1] and frame["accuracy"].between(0, 1).all() and not frame["reused"].any()
    recorded = ddbench.evaluate_set(images, labels, out=tmp_path, name="notebook", **common)
    again = ddbench.evaluate_set(images, labels, out=tmp_path, name="notebook", **common)
    assert again["reused"].all() and list(again["accuracy"]) == list(recorded["accuracy"])
    assert list(recorded["accuracy"]) == list(frame["accuracy"])  # seeded: the same numbers with or without a store
    assert set(_scores(tmp_path)[1]["matcher"]) == {"external:notebook"}


def test_import_and_help_stay_torch_free():
    code = (
        "import sys, ddbench, ddbench.cli.main; assert 'torch' not in sys.modules; assert callable(ddbench.__getattr__)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0
