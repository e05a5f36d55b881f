"""Helpers shared by the test modules (imported as ``helpers``: pytest puts tests/ on the path)."""

import contextlib
import gc
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from nmflow.golden.hwmodel import HardwareModel, Layer


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread while a test runs: two threads on the busy 2-core machines run 10-100x
    slower. Autouse in a module that imports it (``from helpers import one_torch_thread``)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def link_model(seed=0, sizes=(16, 12, 8, 5), input_bits=4):
    """A random ternary HardwareModel whose scores need 3 bytes on the host link."""
    rng = np.random.default_rng(seed)
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.choice([-1, 0, 1], size=(n_out, n_in)).astype(np.int8)
        if index == len(sizes) - 2:
            layers.append(Layer(w, "none",
                                scale=rng.integers(-3000, 3001, n_out).astype(np.int64),
                                offset=rng.integers(-100000, 100001, n_out).astype(np.int64)))
        else:
            bound = n_in * ((1 << input_bits) - 1 if index == 0 else 1)
            t_hi = rng.integers(-bound // 4, bound // 4 + 1, n_out).astype(np.int64)
            t_lo = t_hi - rng.integers(0, 4, n_out).astype(np.int64)
            layers.append(Layer(w, "ternary", t_hi=t_hi, t_lo=t_lo))
    return HardwareModel(input_bits=input_bits, weight_kind="ternary", layers=layers)


def refuses(make, error, message):
    """``make()`` raises ``error`` with exactly ``message``; the half-built component it leaves
    behind is collected here, so Amaranth's unused-elaboratable warning does not leak into a
    later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(error, match=f"^{re.escape(message)}$") as info:
            make()
        info.value.__traceback__ = None
        del info
        gc.collect()


def error_line(capsys, argv):
    """Run ``nmflow argv`` in-process; it must exit with status 2 and print exactly one line,
    which is returned."""
    from nmflow.scripts.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def running_with(path):
    """Live processes (not zombies) whose command line names ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if not entry.name.isdigit():
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rfind(")") + 2] != "Z" and \
                    str(path).encode() in (entry / "cmdline").read_bytes():
                found.append(entry.name)
    return found


def assert_back_to_back(cycles, plan):
    """``cycles`` of inferences offered as soon as the engine could take them: the first takes
    ``cycles_per_inference``, the later ones ``cycles_back_to_back``; when the last layer
    stalls (:attr:`~nmflow.golden.plan.EnginePlan.stalls_last_layer`), from the third on, the
    second between the two."""
    cycles = list(cycles)
    settled = 2 if plan.stalls_last_layer else 1
    assert cycles[:1] == [plan.cycles_per_inference], (cycles, plan.cycles_per_inference)
    assert cycles[settled:] == [plan.cycles_back_to_back] * len(cycles[settled:]), (
        cycles, plan.cycles_back_to_back)
    if settled == 2 and len(cycles) > 1:
        assert plan.cycles_per_inference < cycles[1] <= plan.cycles_back_to_back, cycles


# -- a real local Dask cluster --------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A Dask scheduler and two single-threaded workers on 127.0.0.1; yields the address and
    the worker processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get(
        "PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    logs = tmp_path / "logs"
    logs.mkdir()
    scheduler = subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", str(port),
                                         "--no-dashboard"], env=env, cwd=tmp_path,
                                 stdout=open(logs / "scheduler.log", "w"),
                                 stderr=subprocess.STDOUT)
    workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                 "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                                env=env, cwd=tmp_path,
                                stdout=open(logs / f"worker{i}.log", "w"),
                                stderr=subprocess.STDOUT) for i in range(2)]
    try:
        from distributed import Client
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for process in workers + [scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in workers + [scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
