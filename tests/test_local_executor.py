"""The local executor's own options, without running a real spec."""

from __future__ import annotations

import torch
from ddbench_plugins.executors import local


def test_threads_apply_to_a_single_in_process_worker_and_are_restored(monkeypatch) -> None:
    seen: list[int] = []

    def fake_execute(task, echo=False):
        seen.append(torch.get_num_threads())
        return "done"

    monkeypatch.setattr(local, "execute_task", fake_execute)
    before = torch.get_num_threads()
    executor = local.LocalExecutor(workers=1, threads=1)
    executor.run(["a", "b"], on_start=lambda task: None, on_done=lambda task, result: None)
    assert seen == [1, 1]
    assert torch.get_num_threads() == before
    assert "1 thread" in executor.describe()


def test_a_single_worker_keeps_the_process_threads_when_none_are_asked_for(monkeypatch) -> None:
    seen: list[int] = []
    monkeypatch.setattr(local, "execute_task", lambda task, echo=False: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    local.LocalExecutor(workers=1).run(["a"], on_start=lambda task: None, on_done=lambda task, result: None)
    assert seen == [before]
