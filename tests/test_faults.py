"""Faults (issue 16): a killed sweep leaves no worker behind and reruns cleanly; a crafted pickle in
a training checkpoint does not run; a suite's name cannot write outside --out."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddbench.cli.main import main
from ddbench.util.fileio import safe_name

DDBENCH = [sys.executable, "-m", "ddbench.cli.main"]


def _cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


# ------------------------------------------------------------------------------- sweep workers


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()  # not the resource tracker
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_sweep_leaves_no_worker_and_reruns_once(sig, tmp_path, fmnist_slice):
    out = tmp_path / "out"
    argv = [*DDBENCH, "run", "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--algo", "real",
            "--ipc", "1,2,3", "--iterations", "0", "--eval-epochs", "20", "--seeds", "1", "--no-progress",
            "--workers", "2", "--out", str(out)]  # fmt: skip
    parent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        # kill it mid-run: both workers started and at least one run claimed
        while time.monotonic() < deadline and parent.poll() is None:
            workers = [p for p in _children(parent.pid) if _is_worker(p)]
            if len(workers) == 2 and any((out / "locks").glob("*.lock")):
                break
            time.sleep(0.2)
        assert parent.poll() is None and len(workers) == 2, "the sweep ended before it could be killed"
        parent.send_signal(sig)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "workers outlived their sweep"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stderr.close()

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "waiting for it" not in rerun.stderr  # no orphan holds a run
    with sqlite3.connect(out / "results.sqlite") as conn:
        keys = conn.execute(
            "SELECT run_id, evaluator, seed, protocol, COUNT(*) FROM scores GROUP BY 1, 2, 3, 4"
        ).fetchall()
        runs = conn.execute("SELECT status FROM runs").fetchall()
    assert len(keys) == 3 and all(row[-1] == 1 for row in keys)
    assert sorted(runs) == [("done",)] * 3


def test_a_worker_ends_when_its_parent_is_gone():
    # the watchdog half of die_with_parent (the prctl half is the kernel's): a child whose recorded
    # parent is not its parent exits at once
    code = "from ddbench.running.executor import die_with_parent; import time; die_with_parent(1); time.sleep(30)"
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode != 0


# ---------------------------------------------------------------------------- crafted pickles


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_crafted_pickle_in_train_state_does_not_run(tmp_path, fmnist_slice, capsys):
    marker = tmp_path / "PWNED"
    model = tmp_path / "model"
    model.mkdir()
    torch.save({"model": _Payload(marker), "stage": "ae", "step": 0}, model / "train_state.pt")
    code = _cli(["prior", "train", "ld3m", "--out", str(model), "--data-root", str(fmnist_slice),
                 "--ae-steps", "1", "--diffusion-steps", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert "train_state.pt" in err and "Traceback" not in err


@pytest.mark.slow
def test_train_state_of_ours_resumes_with_weights_only(tmp_path, fmnist_slice):
    # what train_tiny writes loads back under weights_only=True (and a finished model is not retrained)
    model = tmp_path / "model"
    args = ["prior", "train", "ld3m", "--out", str(model), "--data-root", str(fmnist_slice), "--ae-steps", "2",
            "--diffusion-steps", "2", "--width", "8", "--no-progress"]  # fmt: skip
    assert _cli(args) == 0
    from ddbench_plugins.priors.ld3m.train import load_train_state

    saved = load_train_state(model / "train_state.pt")
    assert saved["stage"] == "done" and saved["step"] == 2
    assert _cli(args) == 0


def test_crafted_pickle_as_converted_checkpoint_needs_trust(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, tmp_path / "model.ckpt")
    assert _cli(["prior", "convert-ldm", str(tmp_path / "model.ckpt"), str(tmp_path / "converted")]) == 2
    assert not marker.exists() and "--trust-checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------ file names


@pytest.mark.parametrize("name", ["../../escape/ESCAPED", "a/b", "..", "/abs/ESCAPED"])
def test_suite_name_cannot_write_outside_out(name, tmp_path, capsys):
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    from ddbench.results.store import ResultsStore, store_path

    ResultsStore(store_path(out)).close()
    suite = tmp_path / "work" / "s.toml"
    suite.write_text(f'name = "{name}"\nversion = 1\n[grid]\ndatasets = ["fashion-mnist"]\nmatchers = ["real"]\n')
    before = sorted(p for p in tmp_path.rglob("*"))
    code = _cli(["leaderboard", "--out", str(out), "--suite", str(suite), "--format", "html"])
    assert code == 2 and "plain name" in capsys.readouterr().err
    after = sorted(p for p in tmp_path.rglob("*") if not p.name.endswith(("-wal", "-shm")))
    assert after == [p for p in before if not p.name.endswith(("-wal", "-shm"))]
    assert not Path("/abs").exists()


@pytest.mark.parametrize(
    "text, expected",
    [("../../tmp/x/ESCAPED", "tmp_x_ESCAPED"), ("..", "unnamed"), ("/etc/passwd", "etc_passwd"), ("table1", "table1"),
     (".hidden", "hidden"), ("a b|c", "a_b_c")],
)  # fmt: skip
def test_safe_name_stays_in_its_directory(text, expected, tmp_path):
    name = safe_name(text)
    assert name == expected
    assert (tmp_path / name).resolve().parent == tmp_path.resolve() and os.sep not in name
