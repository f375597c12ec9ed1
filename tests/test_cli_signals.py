"""SIGTERM (`timeout`, `kill`, a scheduler's pre-emption) ends a run as Ctrl-C does, and it resumes."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DDBENCH = [sys.executable, "-m", "ddbench"]


def _args(data_root: Path, out: Path) -> list[str]:
    return ["run", "--dataset", "fashion-mnist", "--data-root", str(data_root), "--prior", "pixel", "--algo", "dm",
            "--ipc", "1", "--iterations", "40", "--checkpoint-every", "1", "--eval-epochs", "2", "--seeds", "1",
            "--algo-opt", "dm.batch_real=12", "--no-progress", "--out", str(out)]  # fmt: skip


def _run_dir(out: Path) -> Path:
    (run_dir,) = (out / "runs" / "fashion-mnist").iterdir()
    return run_dir


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_sigterm_keeps_the_checkpoint_exits_143_and_the_rerun_resumes_to_the_same_result(tmp_path, fmnist_slice):
    reference = subprocess.run(
        [*DDBENCH, *_args(fmnist_slice, tmp_path / "whole")], capture_output=True, text=True, timeout=600
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "cut"
    proc = subprocess.Popen(
        [*DDBENCH, *_args(fmnist_slice, out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("runs/*/*/checkpoint.pt")):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be terminated"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert "Terminated (SIGTERM); distillation resumes from its last checkpoint" in err
    assert "Traceback" not in err
    run_dir = _run_dir(out)
    assert (run_dir / "checkpoint.pt").exists()
    assert not (run_dir / "synthetic.safetensors").exists(), "terminated after distillation: nothing was resumed"
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT status, error FROM runs").fetchall() == [("failed", "Terminated: SIGTERM")]
    listed = subprocess.run(
        [*DDBENCH, "runs", "--out", str(out), "--status", "failed"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and "failed" in listed.stdout and "Terminated: SIGTERM" in listed.stdout, (
        listed.stdout
    )

    rerun = subprocess.run([*DDBENCH, *_args(fmnist_slice, out)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    whole, resumed = _run_dir(tmp_path / "whole"), _run_dir(out)
    assert whole.name == resumed.name  # the same run id
    assert torch.equal(
        load_file(whole / "synthetic.safetensors")["images"], load_file(resumed / "synthetic.safetensors")["images"]
    )
    final_loss = [json.loads((d / "synthetic.json").read_text())["final_loss"] for d in (whole, resumed)]
    assert final_loss[0] == final_loss[1]
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT status, error FROM runs").fetchall() == [("done", None)]


def test_the_sigterm_handler_raises_only_in_its_block():
    from ddbench.cli._signals import SIGTERM_EXIT_CODE, Terminated, sigterm_interrupts

    assert SIGTERM_EXIT_CODE == 143
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as info, sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert isinstance(info.value, KeyboardInterrupt) and str(info.value) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_cuda_runtime_notice_is_filtered_and_nothing_else(caplog):
    import ddbench  # noqa: F401 - installs the filter

    logger = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        logger.warning("Error building extension 'x'")
    assert [r.getMessage() for r in caplog.records] == ["Error building extension 'x'"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the notice appears only without a usable GPU")
def test_torch_says_nothing_about_cuda_on_a_cpu_run(tmp_path):
    code = "import ddbench, torch.utils.cpp_extension"
    env = {**os.environ, "CUDA_HOME": str(tmp_path)}  # a CUDA toolkit without a GPU: torch's notice
    bare = subprocess.run(
        [sys.executable, "-c", code.replace("ddbench, ", "")], capture_output=True, text=True, env=env, timeout=300
    )
    assert "No CUDA runtime is found" in bare.stderr  # the notice this filter exists for
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert ours.returncode == 0 and "No CUDA runtime is found" not in ours.stderr, ours.stderr


def test_dynamos_lru_cache_warning_is_filtered_and_nothing_else():
    code = (
        "import ddbench, warnings\n"
        "warnings.warn('Dynamo detected a call to a `functools.lru_cache`-wrapped function at x', UserWarning)\n"
        "warnings.warn('another warning', UserWarning)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "another warning" in out.stderr, out.stderr
    assert "Dynamo detected" not in out.stderr
