"""Run identity = what ran: effective options, plugin versions, data and model digests (issue 15).

Each test changes one thing a run depends on and checks that the run id follows it, or changes
something a run does not depend on (a typed default, a path) and checks that the id stays.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ddbench_plugins.matchers import _realside as realside
from ddbench_plugins.matchers.dm import DistributionMatching
from fixtures_data import make_fashion_mnist, make_image_folder
from PIL import Image

from ddbench import registry
from ddbench.engine.spec import SPEC_VERSION, RunEnv, RunSpec
from ddbench.errors import InvalidOptionError, PluginLoadError
from ddbench.results.leaderboard import leaderboard_table
from ddbench.results.provenance import Provenance
from ddbench.results.store import ResultsStore, store_path
from ddbench.running.grid import SpecGrid, build_specs
from ddbench.running.identity import resolve_spec, resolve_specs

FIXED = Provenance(versions={"ddbench": "test"}, git_commit="0" * 40, host={"cpu_count": 1})


def _id(env: RunEnv, **spec: object) -> str:
    return resolve_spec(RunSpec(**spec), env).run_id


@pytest.fixture()
def fmnist(tmp_path: Path) -> RunEnv:
    """An environment whose --data-root holds a small random Fashion-MNIST."""
    make_fashion_mnist(tmp_path / "fmnist")
    return RunEnv(out=tmp_path / "out", data_root=str(tmp_path / "fmnist"))


# ------------------------------------------------------------------------------ options


def test_a_default_typed_explicitly_gives_the_same_id_as_leaving_it_out(fmnist):
    implicit = _id(fmnist, matcher="dm")
    assert _id(fmnist, matcher="dm", matcher_options={"batch_real": 256, "net": "convnet"}) == implicit
    assert _id(fmnist, matcher="dm", lrs={"images": 1.0}) == implicit  # pixel + DM's default lr
    assert _id(fmnist, matcher="dm", prior_options={"init": "real"}) == implicit
    assert _id(fmnist, matcher="dm", matcher_options={"batch_real": 128}) != implicit
    assert _id(fmnist, matcher="dm", lrs={"images": 0.5}) != implicit


def test_a_changed_default_gives_a_new_id(fmnist, monkeypatch):
    before = _id(fmnist, matcher="dm")
    defaults = DistributionMatching.__init__.__defaults__
    monkeypatch.setattr(DistributionMatching.__init__, "__defaults__", (defaults[0], 128, *defaults[2:]))
    assert _id(fmnist, matcher="dm") != before
    monkeypatch.setattr(DistributionMatching.__init__, "__defaults__", defaults)
    assert _id(fmnist, matcher="dm") == before


def test_auto_is_resolved_for_the_target_device(fmnist, monkeypatch):
    cpu = resolve_spec(RunSpec(matcher="dm"), fmnist)
    cuda = resolve_spec(RunSpec(matcher="dm"), RunEnv(out=fmnist.out, data_root=fmnist.data_root, device="cuda"))
    assert cpu.run_id != cuda.run_id  # a pretend CUDA device: its real-side chunks are larger
    assert cpu.identity["matcher"]["options"]["real_chunk"] < cuda.identity["matcher"]["options"]["real_chunk"]
    assert cpu.identity["device"] == "cpu" and cuda.identity["device"] == "cuda"

    # real_precision="auto" is recorded as what it means on this machine
    ids = {}
    for fast in (True, False):
        monkeypatch.setattr(realside, "bf16_is_fast", lambda device, fast=fast: fast)
        spec = resolve_spec(RunSpec(matcher="dm"), fmnist)
        ids[fast] = spec.run_id
        assert spec.identity["matcher"]["options"]["real_precision"] == ("bf16" if fast else "fp32")
        explicit = "bf16" if fast else "fp32"
        assert _id(fmnist, matcher="dm", matcher_options={"real_precision": explicit}) == spec.run_id
    assert ids[True] != ids[False]


def test_the_engine_builds_plugins_from_the_effective_options(fmnist):
    spec = resolve_spec(RunSpec(matcher="dc", ipc=10), fmnist)
    options = spec.plugin_options("matcher")
    assert options["outer_loop"] == 10 and options["inner_loop"] == 50  # DC's schedule for IPC 10
    assert options["real_precision"] in ("fp32", "bf16") and isinstance(options["compile"], bool)
    matcher = registry.create("matcher", "dc", **options)
    assert matcher.options() == options


def test_neutral_options_are_recorded_but_not_hashed(fmnist):
    base = resolve_spec(RunSpec(matcher="mtt"), fmnist)
    moved = resolve_spec(
        RunSpec(matcher="mtt", matcher_options={"expert_dir": "/elsewhere", "build_experts": True}), fmnist
    )
    assert moved.run_id == base.run_id
    assert moved.identity["matcher"]["options"]["expert_dir"] == "/elsewhere"
    assert "expert_dir" not in moved.identity["matcher"]["key"]


def test_a_resolved_spec_keeps_its_id_through_json_and_is_not_resolved_again(fmnist):
    spec = resolve_spec(RunSpec(matcher="dm"), fmnist)
    again = RunSpec.from_dict(spec.to_dict())
    assert again.run_id == spec.run_id and again.to_dict()["spec_version"] == SPEC_VERSION == 2
    # resolving on another machine (another device here) keeps what was planned
    assert resolve_spec(again, RunEnv(device="cuda")).run_id == spec.run_id
    assert RunSpec(matcher="dm").run_id != spec.run_id  # a spec as typed is not what ran


# --------------------------------------------------------------------------------- versions


def test_another_plugin_version_gives_another_id(fmnist, monkeypatch):
    v1 = resolve_spec(RunSpec(matcher="dm"), fmnist)
    assert v1.identity["matcher"]["version"] == "v1"
    monkeypatch.setattr(DistributionMatching, "version", 2)
    v2 = resolve_spec(RunSpec(matcher="dm"), fmnist)
    assert v2.run_id != v1.run_id
    # a plugin that declares no version is identified by its distribution's
    monkeypatch.setattr(DistributionMatching, "version", None)
    undeclared = resolve_spec(RunSpec(matcher="dm"), fmnist)
    info = registry.plugin_info("matcher", "dm")
    assert undeclared.identity["matcher"]["version"] == f"{info.distribution}=={info.version}"
    assert undeclared.run_id not in (v1.run_id, v2.run_id)


# ------------------------------------------------------------------------------------- data


def test_data_root_content_is_part_of_the_id_and_its_location_is_not(tmp_path):
    make_fashion_mnist(tmp_path / "a", seed=0)
    make_fashion_mnist(tmp_path / "b", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "a-copy")
    ids = {name: _id(RunEnv(data_root=str(tmp_path / name)), matcher="dm") for name in ("a", "b", "a-copy")}
    assert ids["a"] != ids["b"]
    assert ids["a"] == ids["a-copy"]


def _ppm_folder(root: Path, value: int) -> None:
    """Two classes of two 8×8 PPM images each: fixed-size files, so only their bytes differ."""
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), value + i, np.uint8)).save(root / name / f"{i}.ppm")


def test_another_image_folder_gives_another_id(tmp_path):
    _ppm_folder(tmp_path / "one", 10)
    _ppm_folder(tmp_path / "two", 200)  # the same names and sizes, other pixels
    make_image_folder(tmp_path / "three", ["cat", "dog", "emu"], per_class=2)
    shutil.copytree(tmp_path / "one", tmp_path / "one-copy")
    ids = {
        n: _id(RunEnv(data_root=str(tmp_path / n)), dataset="image-folder", matcher="dm")
        for n in ("one", "two", "three", "one-copy")
    }
    assert len({ids["one"], ids["two"], ids["three"]}) == 3
    assert ids["one-copy"] == ids["one"]
    # the dataset's own options count too (another held-out split)
    grid = RunEnv(data_root=str(tmp_path / "one"))
    record = resolve_spec(RunSpec(dataset="image-folder", matcher="dm"), grid).identity["dataset"]
    assert record["options"] == {"val_fraction": 0.2, "seed": 0, "cache": True} and "cache" not in record["key"]
    assert record["key"]["fingerprint"].startswith("sha256:")


def test_missing_data_does_not_stop_planning(tmp_path):
    spec = resolve_spec(RunSpec(dataset="image-folder"), RunEnv(data_root=str(tmp_path / "nowhere")))
    assert spec.identity["dataset"]["key"]["fingerprint"] is None


# ----------------------------------------------------------------------------------- models


def _fake_model(directory: Path, weights: bytes) -> None:
    """A directory in diffusers layout as far as hashing goes (never loaded here)."""
    (directory / "unet").mkdir(parents=True)
    (directory / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    (directory / "unet" / "config.json").write_text('{"sample_size": 8}')
    (directory / "samples.png").write_bytes(b"not part of the model")


def test_a_model_directory_is_identified_by_its_weights_not_its_path(fmnist, tmp_path):
    _fake_model(tmp_path / "m1", b"weights one")
    first = resolve_spec(RunSpec(prior="ld3m", prior_options={"model_dir": str(tmp_path / "m1")}), fmnist)
    assert first.identity["prior"]["options"]["model_dir"] == str(tmp_path / "m1")  # kept as a label
    shutil.move(tmp_path / "m1", tmp_path / "moved")
    moved = resolve_spec(RunSpec(prior="ld3m", prior_options={"model_dir": str(tmp_path / "moved")}), fmnist)
    assert moved.run_id == first.run_id
    (tmp_path / "moved" / "samples.png").write_bytes(b"other samples")  # not weights or config
    assert _id(fmnist, prior="ld3m", prior_options={"model_dir": str(tmp_path / "moved")}) == first.run_id
    (tmp_path / "moved" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights two")
    assert _id(fmnist, prior="ld3m", prior_options={"model_dir": str(tmp_path / "moved")}) != first.run_id
    assert first.identity["prior"]["key"]["model_dir"].startswith("sha256:")  # the content, not the path


def test_glad_weights_are_hashed_by_content(fmnist, tmp_path):
    (tmp_path / "g.safetensors").write_bytes(b"generator")
    (tmp_path / "h.safetensors").write_bytes(b"generator")
    (tmp_path / "k.safetensors").write_bytes(b"another generator")
    ids = {n: _id(fmnist, prior="glad", prior_options={"weights": str(tmp_path / f"{n}.safetensors")}) for n in "ghk"}
    assert ids["g"] == ids["h"] != ids["k"]


# ------------------------------------------------------------------------------ old stores


def _v1_spec() -> dict:
    """A spec as ddbench wrote it before spec version 2 (typed options, run id of those)."""
    spec = RunSpec(dataset="fashion-mnist", prior="pixel", matcher="dm", iterations=5).to_dict()
    del spec["identity"]
    return {**spec, "spec_version": 1}


def test_an_old_store_opens_and_its_runs_stay_apart_from_new_ones(tmp_path, fmnist):
    old_spec = _v1_spec()
    new_spec = resolve_spec(RunSpec(dataset="fashion-mnist", prior="pixel", matcher="dm", iterations=5), fmnist)
    protocol = {"name": "dc", "report": "final"}
    with ResultsStore(store_path(tmp_path / "out"), provenance=FIXED) as store:
        store.start_run("oldrun0000000000", old_spec, None)
        store.finish_run("oldrun0000000000", 1.0, None, None)
        for seed, acc in ((0, 0.50), (1, 0.52)):
            store.add_score("oldrun0000000000", "convnet", seed, protocol, acc, None, 1.0, 1.0, None)
    with ResultsStore(
        store_path(tmp_path / "out"), provenance=FIXED
    ) as store:  # opened again, as a later ddbench would
        store.start_run(new_spec.run_id, new_spec.to_dict(), None)
        store.finish_run(new_spec.run_id, 1.0, None, None)
        for seed, acc in ((0, 0.80), (1, 0.82)):
            store.add_score(new_spec.run_id, "convnet", seed, protocol, acc, None, 1.0, 1.0, None)
        scores = store.scores_frame()
    columns, rows = leaderboard_table(scores, rows=("prior", "matcher"), columns="dataset")
    cells = {row[0]: row[2] for row in rows}
    assert set(cells) == {"pixel", "pixel (spec v1)"}
    assert cells["pixel"].text() == "81.0 ± 1.0" and cells["pixel (spec v1)"].text() == "51.0 ± 1.0"
    # the CLI shows it too
    out = subprocess.run(
        [sys.executable, "-m", "ddbench.cli.main", "leaderboard", "--out", str(tmp_path / "out"), "--format", "csv"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "pixel (spec v1),dm,51.00,1.00,2" in out.stdout and "pixel,dm,81.00,1.00,2" in out.stdout


def test_a_run_from_a_newer_spec_version_is_shown_apart(tmp_path):
    """A store written by a later ddbench (spec version above ours) must not pass for current runs."""
    from ddbench.engine.spec import SPEC_VERSION

    protocol = {"name": "dc", "report": "final"}
    with ResultsStore(store_path(tmp_path), provenance=FIXED) as store:
        for run_id, version, acc in (
            ("current000000000", SPEC_VERSION, 0.8),
            ("future0000000000", SPEC_VERSION + 1, 0.6),
        ):
            spec = {**_v1_spec(), "spec_version": version}
            store.start_run(run_id, spec, None)
            store.finish_run(run_id, 1.0, None, None)
            store.add_score(run_id, "convnet", 0, protocol, acc, None, 1.0, 1.0, None)
        scores = store.scores_frame()
    columns, rows = leaderboard_table(scores, rows=("prior", "matcher"), columns="dataset")
    cells = {row[0]: row[2].text() for row in rows}
    assert cells == {"pixel": "80.0 ± 0.0", f"pixel (spec v{SPEC_VERSION + 1})": "60.0 ± 0.0"}


# ------------------------------------------------------------------------ bad option values


@pytest.mark.parametrize(
    ("family", "name", "options", "words"),
    [
        ("matcher", "dm", {"batch_real": "abc"}, ("Matcher 'dm'", "batch_real", "integer", "'abc'")),
        ("matcher", "dc", {"net_lr": "fast"}, ("Matcher 'dc'", "net_lr", "number", "'fast'")),
        ("prior", "ld3m", {"checkpoint": "sometimes"}, ("Prior 'ld3m'", "checkpoint", "true or false")),
        ("prior", "glad", {"class_ids": "all"}, ("Prior 'glad'", "class_ids", "list of an integer")),
    ],
)
def test_bad_option_values_are_one_line_errors(family, name, options, words):
    with pytest.raises(InvalidOptionError) as err:
        registry.create(family, name, **options)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_option_values_are_converted_to_their_annotated_types():
    dm = registry.create("matcher", "dm", batch_real="64", real_chunk="none", net=5)
    assert dm.batch_real == 64 and dm.options()["batch_real"] == 64
    assert dm.real_chunk_option is None and dm.net_name == "5"  # `net=5` parses as the number 5
    assert registry.create("matcher", "dm", compile="auto").compile == "auto"
    assert registry.create("matcher", "dc", net_lr=1).net_lr == 1.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ddbench.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_bad_values_on_the_command_line_and_in_suites_fail_before_any_data_loads(tmp_path):
    bad_option = _cli(
        "run",
        "--dataset",
        "fashion-mnist",
        "--algo-opt",
        "batch_real=abc",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    )
    bad_lr = _cli(
        "run", "--dataset", "fashion-mnist", "--lr", "images=abc", "--out", str(tmp_path / "o"), "--no-progress"
    )
    suite = tmp_path / "bad.toml"
    suite.write_text(
        'name = "bad"\nversion = 1\n\n[grid]\ndatasets = ["fashion-mnist"]\nmatchers = ["dm"]\nmatcher_options = { batch_real = "lots" }\n'
    )
    bad_suite = _cli("run", "--suite", str(suite), "--out", str(tmp_path / "o"), "--no-progress")
    for result, words in (
        (bad_option, ("batch_real", "integer", "'abc'")),
        (bad_lr, ("images", "number", "'abc'")),
        (bad_suite, ("batch_real", "'lots'")),
    ):
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and all(w in errors[0] for w in words), result.stderr
    assert not (tmp_path / "o" / "runs").exists()


def test_a_plugin_that_does_not_subclass_its_family_base_is_a_clear_error():
    class NotAMatcher:
        pass

    with pytest.raises(PluginLoadError, match="does not subclass ddbench.interfaces.Matcher"):
        registry._check_base_class("matcher", "dm", NotAMatcher)
    registry._check_base_class("matcher", "dm", DistributionMatching)  # the real one passes


# ---------------------------------------------------------------------------- the pipeline


def test_specs_from_options_resolve_once_for_a_sweep(fmnist):
    specs = build_specs(SpecGrid(datasets=["fashion-mnist"], matchers=["dm", "real"], ipcs=[1, 10]))
    resolved = resolve_specs(specs, fmnist)
    assert len({s.run_id for s in resolved}) == 4
    assert all(s.identity is not None for s in resolved)
    assert [resolve_spec(s, fmnist).run_id for s in specs] == [s.run_id for s in resolved]
    assert resolved[0].identity["dataset"]["key"]["fingerprint"].startswith("sha256:")
    assert resolved[0].identity["dataset"]["found_at"] == fmnist.data_root


def test_a_variant_label_shows_what_differs_from_the_default_in_the_runs_context(fmnist, monkeypatch):
    """``auto`` resolved as it would be by default is no variant; pinning the other value is."""
    from ddbench_plugins.priors.ld3m import prior as ld3m_prior

    from ddbench.results.report import prior_label, recorded_labels
    from ddbench.results.report.rows import spec_prior_label

    monkeypatch.setattr(ld3m_prior, "bf16_is_fast", lambda device: True)

    def label(spec: RunSpec) -> str:
        return prior_label("ld3m", spec.plugin_options("prior"), recorded_labels(spec.to_dict()))

    default = resolve_spec(RunSpec(prior="ld3m", matcher="dm", ipc=10), fmnist)
    assert default.plugin_options("prior")["precision"] == "bf16"
    assert label(default) == "ld3m[generator=trained]" and spec_prior_label("ld3m", default.to_dict()) == "ld3m"
    pinned = resolve_spec(RunSpec(prior="ld3m", matcher="dm", ipc=10, prior_options={"precision": "fp32"}), fmnist)
    assert label(pinned) == "ld3m[precision=fp32,generator=trained]"
    assert spec_prior_label("ld3m", pinned.to_dict()) == "ld3m[precision=fp32]"  # the typed options
