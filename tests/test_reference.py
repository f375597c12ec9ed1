"""Scores relative to real data (`ddbench leaderboard --reference`), the full-data baseline, and the
soft-label mark on the leaderboard."""

from __future__ import annotations

import csv
import doctest
import io
import math

import pytest
from click.testing import CliRunner

from ddbench.cli.main import cli, main
from ddbench.engine import full_data, soft_labels
from ddbench.results import reference
from ddbench.results.leaderboard import Delta, TextCell, leaderboard_table
from ddbench.results.reference import ddranking_score, reference_table
from ddbench.results.store import ResultsStore, store_path

TEACHER = "soft=ce,teacher=convnet:2ep"


def _store(out, runs: list[tuple[str, str, str, int, str, str, list[float]]], **spec_extra: object) -> None:
    """Runs (run_id, prior, matcher, ipc, evaluator, protocol, accuracies by seed) in a store at ``out``."""
    with ResultsStore(store_path(out)) as store:
        for run_id, prior, matcher, ipc, evaluator, protocol, accs in runs:
            if store.get_run(run_id) is None:
                spec = {
                    "dataset": "fashion-mnist",
                    "prior": prior,
                    "matcher": matcher,
                    "ipc": ipc,
                    "spec_version": 2,
                    **spec_extra,
                }
                store.start_run(run_id, spec, None)
                store.finish_run(run_id, 1.0, None, None)
            for seed, acc in enumerate(accs):
                record = {
                    "name": protocol,
                    **(
                        {
                            "soft_labels": soft_labels.SoftLabels(
                                "ce", teacher=soft_labels.Teacher("convnet", 2)
                            ).to_dict()
                        }
                        if "soft=" in protocol
                        else {}
                    ),
                }
                store.add_score(run_id, evaluator, seed, record, acc, None, 1.0, 1.0, None)


def _frame(out):
    with ResultsStore(store_path(out), read_only=True) as store:
        return store.scores_frame()


def _by_row(table) -> dict[tuple, dict[str, object]]:
    keys = table.columns[: table.n_keys]
    return {
        tuple(dict(zip(keys, row))[k] for k in ("prior", "matcher", "evaluator", "protocol")): dict(
            zip(table.columns, row)
        )
        for row in table.rows
    }


def test_reference_columns_from_known_numbers(tmp_path) -> None:
    _store(tmp_path, [
        ("dm10", "pixel", "dm", 10, "convnet", "dc[epochs=300]", [0.80, 0.82]),
        ("dm10", "pixel", "dm", 10, "convnet", f"dc[epochs=300,{TEACHER}]", [0.86, 0.86]),
        ("dm10", "pixel", "dm", 10, "alexnet", "dc[epochs=300]", [0.50]),
        ("real10a", "pixel", "real", 10, "convnet", "dc[epochs=300]", [0.70]),
        ("real10b", "pixel", "real", 10, "convnet", "dc[epochs=300]", [0.72]),  # pooled with real10a: 71 %
        ("real1", "pixel", "real", 1, "convnet", "dc[epochs=300]", [0.40]),  # another IPC: not this row's
        ("full", "full-data", "full-data", 6000, "convnet", "dc[epochs=1]", [0.85]),
        ("full", "full-data", "full-data", 6000, "convnet", "dc[epochs=2]", [0.90]),  # most epochs: the one used
    ])  # fmt: skip
    table, notes = reference_table(_frame(tmp_path))
    rows = _by_row(table)
    assert ("full-data", "full-data", "convnet", "dc[epochs=2]") not in rows  # a reference, not a row

    hard = rows[("pixel", "dm", "convnet", "dc[epochs=300]")]
    assert hard["accuracy"].mean == pytest.approx(0.81)
    assert hard["full data"].mean == pytest.approx(0.90) and hard["random real"].mean == pytest.approx(0.71)
    assert isinstance(hard["HLR (gap to full)"], Delta) and hard["HLR (gap to full)"].value == pytest.approx(0.09)
    assert hard["IOR (over random)"].value == pytest.approx(0.10)
    expected = (math.exp(0.5 * 0.10 - 0.5 * 0.09) - math.exp(-1)) / (math.e - math.exp(-1))
    assert isinstance(hard["DD-Ranking score"], TextCell) and hard["DD-Ranking score"].value == pytest.approx(expected)
    assert hard["DD-Ranking score"].text() == f"{expected:.3f}"

    # soft labels: HLR from the same run's hard-label score, IOR needs random images under the same teacher
    soft = rows[("pixel", "dm", "convnet", f"dc[epochs=300,{TEACHER}]")]
    assert soft["HLR (gap to full)"].value == pytest.approx(0.09)
    assert soft["IOR (over random)"] is None and soft["DD-Ranking score"] is None
    assert isinstance(soft["random real"], TextCell) and soft["random real"].value is None
    assert soft["random real"].text() == (
        "ddbench run --dataset fashion-mnist --algo real --ipc 10 --evaluators convnet --eval-epochs 300 "
        "--soft-labels teacher:convnet --teacher-epochs 2"
    )
    # no full-data baseline for alexnet: the cell names the command that fills it
    other = rows[("pixel", "dm", "alexnet", "dc[epochs=300]")]
    assert other["full data"].text() == "ddbench baseline --dataset fashion-mnist --evaluators alexnet"
    assert other["HLR (gap to full)"] is None and other["DD-Ranking score"] is None
    assert any("full data, fashion-mnist convnet: dc[epochs=2]" in note and "1 seed(s)" in note for note in notes), (
        notes
    )
    assert ("pixel", "real", "convnet", "dc[epochs=300]") not in rows  # a reference too

    # the same through the command line, as CSV numbers
    result = CliRunner().invoke(
        cli,
        [
            "leaderboard",
            "--out",
            str(tmp_path),
            "--reference",
            "--format",
            "csv",
            "--ipc",
            "10",
            "--evaluators",
            "convnet",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = list(csv.DictReader(io.StringIO(result.stdout)))
    dm = next(line for line in lines if line["matcher"] == "dm" and line["protocol"] == "dc[epochs=300]")
    assert dm["HLR (gap to full)_mean"] == "+9.00" and dm["IOR (over random)_mean"] == "+10.00"
    assert dm["DD-Ranking score_mean"] == f"{expected:.4f}"
    assert "HLR = full-data accuracy" in result.stderr


def test_ddranking_score_matches_its_definition() -> None:
    assert ddranking_score(0.2, 0.3, weight=1.0) == pytest.approx(
        (math.exp(0.3) - math.exp(-1)) / (math.e - math.exp(-1))
    )
    assert ddranking_score(0.2, 0.3, weight=0.0) == pytest.approx(
        (math.exp(-0.2) - math.exp(-1)) / (math.e - math.exp(-1))
    )
    assert doctest.testmod(reference).failed == 0 and doctest.testmod(soft_labels).failed == 0


def test_soft_label_scores_are_marked_on_the_leaderboard(tmp_path) -> None:
    _store(tmp_path, [("dm10", "pixel", "dm", 10, "convnet", f"dc[{TEACHER}]", [0.86])])
    frame = _frame(tmp_path)
    # only soft-label scores and rows without the protocol: the row itself says so
    (row,) = leaderboard_table(frame, rows=("prior", "matcher")).rows
    assert row[0] == f"pixel ({TEACHER})"
    _store(tmp_path, [("dm10", "pixel", "dm", 10, "convnet", "dc", [0.80])])
    result = CliRunner().invoke(
        cli, ["leaderboard", "--out", str(tmp_path), "--rows", "prior,matcher", "--format", "markdown"]
    )
    assert result.exit_code == 0, result.output
    assert f"| pixel ({TEACHER}) | dm" in result.stdout
    assert result.stdout.count("| pixel") == 2  # the hard- and the soft-label row, apart
    # the default view groups by protocol, whose key says soft=…
    result = CliRunner().invoke(cli, ["leaderboard", "--out", str(tmp_path), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert f"dc[{TEACHER}]" in result.stdout and "\ndc," not in result.stdout


def test_full_data_baseline_is_trained_once_and_reused(tmp_path, fmnist_slice, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    argv = [
        "baseline",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        str(fmnist_slice),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-progress",
    ]
    _main(argv)
    err = capsys.readouterr().err
    assert "120 training images, 1 epoch(s) of dc" in err and "(full-data)" in err
    with ResultsStore(store_path(out), read_only=True) as store:
        scores, runs = store.scores_frame(), store.runs_frame()
    assert (
        list(scores["protocol"]) == ["dc[epochs=1]"]
        and list(runs["prior"]) == ["full-data"]
        and list(runs["ipc"]) == [12]
    )
    assert len(list((out / "cache" / "full-data").glob("*.safetensors"))) == 1

    def no_training(*_args, **_kwargs):
        raise AssertionError("the baseline trained again")

    monkeypatch.setattr(full_data, "train_on_real", no_training)
    _main(argv)
    assert "(stored)" in capsys.readouterr().err
    # a second seed is another network: only it trains (and here refuses to)
    with pytest.raises(AssertionError, match="trained again"):
        _main([*argv, "--seeds", "2"])


def _main(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exit_:
        assert not exit_.code, exit_.code


def test_variants_of_one_prior_are_rows_of_their_own(tmp_path) -> None:
    """Two LD3M runs that differ only in the generator share every row key but the prior's options;
    --reference refused the store ("differ in run_id") instead of showing both."""
    _store(tmp_path, [("random", "ld3m", "dm", 1, "convnet", "glad[epochs=300]", [0.60, 0.62])],
           prior_options={"generator": "random"})  # fmt: skip
    _store(tmp_path, [("trained", "ld3m", "dm", 1, "convnet", "glad[epochs=300]", [0.70])],
           prior_options={"generator": "trained"})  # fmt: skip
    table, _ = reference_table(_frame(tmp_path))
    rows = _by_row(table)
    assert rows[("ld3m[generator=random]", "dm", "convnet", "glad[epochs=300]")]["accuracy"].mean == pytest.approx(0.61)
    assert rows[("ld3m[generator=trained]", "dm", "convnet", "glad[epochs=300]")]["accuracy"].mean == pytest.approx(0.7)
    result = CliRunner().invoke(cli, ["leaderboard", "--out", str(tmp_path), "--reference", "--ipc", "1"])
    assert result.exit_code == 0, result.output
    assert "ld3m[generator=random]" in result.stdout and "ld3m[generator=trained]" in result.stdout
