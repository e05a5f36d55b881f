"""Many independent jobs, one mechanism (nmflow.jobs): local processes and a real local Dask
cluster (a scheduler and two workers on 127.0.0.1, started and stopped here)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.jobs import Job, cluster_address, run_jobs
from nmflow.golden import hwmodel
from nmflow.golden.synthetic import random_model
from nmflow.scripts import cli

from helpers import cluster  # noqa: F401 (a fixture)


# -- jobs (module-level: workers import them) ---------------------------------------------------

def draw(shared, name, n):
    """A job whose randomness comes from its key, never from the order jobs run in."""
    rng = np.random.default_rng([shared["seed"], sum(map(ord, name)), n])
    return {"name": name, "values": rng.random(3).tolist(), "pid": None}


def slow_draw(shared, name, n):
    time.sleep(shared.get("sleep", 0.0))
    return draw(shared, name, n)


def fail_on(shared, name, n):
    if name == "bad":
        raise ValueError(f"job {n} cannot\nsecond line")
    return draw(shared, name, n)


def die_once(shared, name, n):
    """Kills its worker process the first time job 2 runs (a marker file remembers)."""
    marker = Path(shared["folder"]) / f"died-{n}"
    if n == 2 and not marker.exists():
        marker.write_text("")
        os._exit(1)
    return draw(shared, name, n)


def long_unless_first(shared, name, n):
    """Job 0 returns at once; the others take a minute."""
    if n:
        time.sleep(60)
    return draw(shared, name, n)


def allocator(shared, name, n):
    """What the worker's allocator was set to, and the environment its nanny gave it."""
    import nmflow.jobs
    return {"malloc": nmflow.jobs._SHARED.get("malloc"),
            "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


def jobs_of(fn, names=("a", "b", "c", "d", "e", "f")):
    return [Job((name, n), fn, (name, n)) for n, name in enumerate(names)]


# -- local ----------------------------------------------------------------------------------------

def test_results_do_not_depend_on_the_workers(tmp_path):
    one = run_jobs(jobs_of(draw), folder=tmp_path / "one", shared={"seed": 5}, workers=1)
    two = run_jobs(jobs_of(draw), folder=tmp_path / "two", shared={"seed": 5}, workers=2)
    assert one == two and list(one) == [(name, n) for n, name in enumerate("abcdef")]
    assert len(list((tmp_path / "one").glob("*.json"))) == 6
    other = run_jobs(jobs_of(draw), folder=tmp_path / "three", shared={"seed": 6}, workers=2)
    assert other != one


def test_a_failed_job_is_named_and_the_others_kept(tmp_path):
    names = ("a", "bad", "c", "d")
    with pytest.raises(NmflowError) as error:
        run_jobs(jobs_of(fail_on, names), folder=tmp_path, shared={"seed": 1}, workers=2)
    line = str(error.value)
    assert "\n" not in line
    assert line.startswith("1 of 4 jobs failed (the others' results are in ")
    assert line.endswith('; first: ["bad",1]: ValueError: job 1 cannot')
    assert len(list(tmp_path.glob("*.json"))) == 3
    counts = {}
    result = run_jobs(jobs_of(draw, names), folder=tmp_path, shared={"seed": 1}, workers=2,
                      resume=True, counts=counts)
    assert counts == {"ran": 1, "reused": 3, "failed": 0}
    assert result == run_jobs(jobs_of(draw, names), folder=tmp_path / "fresh", shared={"seed": 1})


def test_an_interrupted_run_resumes_with_only_the_missing_jobs(tmp_path):
    seen = []

    def stop(what, done, total, note):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs_of(draw), folder=tmp_path, shared={"seed": 2}, workers=1, progress=stop)
    assert len(list(tmp_path.glob("*.json"))) == 2
    counts = {}
    resumed = run_jobs(jobs_of(draw), folder=tmp_path, shared={"seed": 2}, workers=2,
                       resume=True, counts=counts)
    assert counts == {"ran": 4, "reused": 2, "failed": 0}
    assert resumed == run_jobs(jobs_of(draw), folder=tmp_path / "whole", shared={"seed": 2})
    # without --resume the folder starts over
    counts = {}
    run_jobs(jobs_of(draw), folder=tmp_path, shared={"seed": 2}, counts=counts)
    assert counts["ran"] == 6


def test_an_interruption_does_not_wait_for_the_running_jobs(tmp_path):
    # Ctrl-C (here: from the progress callback) interrupts the jobs the workers are running
    # rather than waiting a minute for them; the job that finished is kept.
    def stop(what, done, total, note):
        if done == 1:
            raise KeyboardInterrupt
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs_of(long_unless_first, "abc"), folder=tmp_path, shared={"seed": 1},
                 workers=2, progress=stop)
    assert time.monotonic() - start < 30
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_a_dead_local_worker_has_its_jobs_run_again(tmp_path):
    result = run_jobs(jobs_of(die_once), folder=tmp_path / "r",
                      shared={"seed": 3, "folder": str(tmp_path)}, workers=2)
    assert (tmp_path / "died-2").exists()
    assert result == run_jobs(jobs_of(draw), folder=tmp_path / "s", shared={"seed": 3})


def test_bad_keys_and_clusters_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(NmflowError, match=r"^jobs must have different keys; \('a', 0\) is "
                                          r"repeated$"):
        run_jobs(jobs_of(draw, ("a",)) * 2, folder=tmp_path)
    with pytest.raises(NmflowError, match=r"^cluster must be a Dask scheduler address such as "
                                          r"tcp://127.0.0.1:8786, not 'nowhere'$"):
        cluster_address("nowhere")
    monkeypatch.setenv("NMFLOW_CLUSTER", "tcp://127.0.0.1:9")
    assert cluster_address() == "tcp://127.0.0.1:9"
    import nmflow.jobs
    monkeypatch.setattr(nmflow.jobs, "CONNECT_SECONDS", 2)   # nothing listens: no need for 20
    with pytest.raises(NmflowError, match=r"^cannot reach the Dask scheduler at "
                                          r"tcp://127.0.0.1:9: "):
        run_jobs(jobs_of(draw), folder=tmp_path, shared={"seed": 1})


# -- a real local Dask cluster --------------------------------------------------------------------

@pytest.mark.slow       # starts a Dask scheduler and two workers
def test_a_cluster_gives_the_local_results_even_when_a_worker_is_killed(cluster, tmp_path):
    address, workers = cluster
    names = tuple("abcdefghij")
    local = run_jobs(jobs_of(draw, names), folder=tmp_path / "local", shared={"seed": 9})
    seen = []

    def kill_one(what, done, total, note):
        seen.append(done)
        if done == 2:                     # mid-run: the other worker picks its jobs up
            workers[0].send_signal(signal.SIGKILL)
    remote = run_jobs(jobs_of(slow_draw, names), folder=tmp_path / "remote",
                      shared={"seed": 9, "sleep": 0.3}, cluster=address, progress=kill_one)
    assert workers[0].poll() is not None          # it was killed
    assert remote == local and seen[-1] == 10
    # the nanny's trim threshold (every temporary a fresh mapping) is undone in the worker
    state = run_jobs(jobs_of(allocator, "a"), folder=tmp_path / "malloc", cluster=address)
    assert list(state.values()) == [{"malloc": True, "trim": "65536"}]
    files = sorted(p.read_bytes() for p in (tmp_path / "local").glob("*.json"))
    assert files == sorted(p.read_bytes() for p in (tmp_path / "remote").glob("*.json"))


@pytest.mark.slow       # starts a Dask scheduler and two workers
def test_the_read_error_sweep_on_a_cluster_writes_the_local_files(cluster, tmp_path):
    address, _ = cluster
    folder = tmp_path / "models"
    hwmodel.save(random_model([64, 16, 10], input_bits=5, weight_kind="ternary", seed=1),
                 folder / "tnn")
    hwmodel.save(random_model([64, 16, 10], input_bits=5, weight_kind="binary", seed=2),
                 folder / "bnn")
    common = ["ber-sweep", "--tnn", str(folder / "tnn.json"), "--bnn", str(folder / "bnn.json"),
              "--rates", "0.01,0.1", "--passes", "2", "--limit", "40", "--chip-samples", "500"]
    assert cli.main(common + ["--out", str(tmp_path / "one"), "--jobs", "1"]) == 0
    assert cli.main(common + ["--out", str(tmp_path / "many"), "--cluster", address]) == 0
    for name in ("ber.json", "ber.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes()
    run = json.loads((tmp_path / "many" / "ber_run.json").read_text())
    assert run["cluster"] == address and run["points_run"] == 2 + 2 * 4 + 2 + 2
    # resumed with nothing missing: no point runs again
    assert cli.main(common + ["--out", str(tmp_path / "many"), "--resume"]) == 0
    again = json.loads((tmp_path / "many" / "ber_run.json").read_text())
    assert again["points_run"] == 0 and again["points_resumed"] == run["points_run"]


# -- a nextpnr seed sweep -------------------------------------------------------------------------

def test_the_seed_kept_is_the_fastest_run_clock_then_fmax_then_the_lowest_seed():
    from nmflow.flow.seeds import best_seed
    rows = [{"seed": 1, "run_clock_mhz": 36.75, "fmax_mhz": 40.1},
            {"seed": 2, "error": "timing not met"},
            {"seed": 3, "run_clock_mhz": 42.0, "fmax_mhz": 44.3},
            {"seed": 4, "run_clock_mhz": 42.0, "fmax_mhz": 45.0},
            {"seed": 5, "run_clock_mhz": 42.0, "fmax_mhz": 45.0}]
    assert best_seed(rows)["seed"] == 4
    assert best_seed(rows[:3])["seed"] == 3
    assert best_seed([rows[1]]) is None


@pytest.mark.parametrize("argv, line", [
    (["build", "--seeds", "1"], "build: --seeds must be an integer from 2 to 64, not '1'"),
    (["build", "--seeds", "2", "--seed", "3"], "build: --seed and --seeds exclude each other"),
    (["build", "--jobs", "2"], "build: --jobs, --cluster and --resume go with --seeds"),
])
def test_seed_sweep_options_refused_in_one_line(capsys, tmp_path, argv, line):
    assert cli.main([*argv, "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err, err


@pytest.mark.slow       # two real builds (Yosys and nextpnr)
def test_a_seed_sweep_keeps_the_best_build_and_resumes(tmp_path):
    hwmodel.save(random_model([16, 8, 4], input_bits=2, weight_kind="ternary", seed=4),
                 tmp_path / "hwmodel")
    argv = [sys.executable, "-m", "nmflow.scripts.cli", "build", "--run", str(tmp_path),
            "--lanes", "4", "--batch", "0", "--seeds", "2", "--jobs", "2"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "icebreaker"
    # every seed built in its own folder, with the seed nextpnr was given
    seeds = {k: json.loads((out / "seeds" / f"seed{k}" / "build.json").read_text())
             for k in (1, 2)}
    assert {k: build["seed"] for k, build in seeds.items()} == {1: 1, 2: 2}
    summary = json.loads((out / "build.json").read_text())
    rows = {row["seed"]: row for row in summary["seed_sweep"]["seeds"]}
    assert {k: rows[k]["fmax_mhz"] for k in rows} == {k: b["fmax_mhz"] for k, b in seeds.items()}
    best = max(seeds, key=lambda k: (seeds[k]["run_clock_mhz"], seeds[k]["fmax_mhz"], -k))
    assert summary["seed_sweep"]["chosen"] == best == summary["seed"]
    assert summary["fmax_mhz"] == seeds[best]["fmax_mhz"]
    # the kept products are the chosen seed's, and build.json points at them
    assert (out / "nmflow_top.bin").read_bytes() == (
        out / "seeds" / f"seed{best}" / "nmflow_top.bin").read_bytes()
    assert Path(summary["bitstream"]) == out / "nmflow_top.bin"
    # resumed, no seed is built again
    stamps = {k: (out / "seeds" / f"seed{k}" / "nmflow_top.bin").stat().st_mtime_ns
              for k in (1, 2)}
    again = subprocess.run(argv + ["--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {k: (out / "seeds" / f"seed{k}" / "nmflow_top.bin").stat().st_mtime_ns
            for k in (1, 2)} == stamps
    assert json.loads((out / "build.json").read_text())["seed_sweep"] == summary["seed_sweep"]
