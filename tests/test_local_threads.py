"""The local runner's torch threads leave the decode processes their cores (CPU runs only).

On 2 cores, torch's 2 spinning threads beside 2 decode processes made a tiny model's 256-video run
7x slower than with one thread (bench/bench_runners.py); the rule is max(1, cores - workers).
"""

from __future__ import annotations

import os

import pytest
import torch

from mlbcli.runners.local import cpu_threads_beside_decoders


@pytest.fixture
def no_thread_env(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_cpu_runs_leave_the_decoders_their_cores_and_restore_the_count(no_thread_env):
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    with cpu_threads_beside_decoders("cpu", 2):
        assert torch.get_num_threads() == max(1, cores - 2)
    assert torch.get_num_threads() == cores
    with cpu_threads_beside_decoders("cpu", cores + 5):  # more workers than cores: still one thread
        assert torch.get_num_threads() == 1


@pytest.mark.parametrize(("device", "workers"), [("cuda", 2), ("cpu", 0)])
def test_no_decoders_or_no_cpu_model_keeps_torch_threads(no_thread_env, device, workers):
    torch.set_num_threads(2)
    with cpu_threads_beside_decoders(device, workers):
        assert torch.get_num_threads() == 2


def test_a_thread_count_the_user_chose_is_kept(no_thread_env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    with cpu_threads_beside_decoders("cpu", 2):
        assert torch.get_num_threads() == 2
