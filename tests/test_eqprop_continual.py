"""Permuted tasks in sequence with binarized EqProp (nmflow eqprop continual): the protocol of the
fixed-point twin replayed step by step from its description, consolidation that holds, the
command's files, resume and bad options."""

import json

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.golden import eqprop_continual as ec
from nmflow.golden import eqprop_fixed as fx
from nmflow.golden.continual import permutations
from nmflow.golden.datasets import load_digits
from nmflow.scripts import cli


class Subset:
    """The first images of digits (train and test), to keep the runs short."""

    def __init__(self, n_train=160, n_test=60):
        d = load_digits()
        self.x_train, self.y_train = d.x_train[:n_train], d.y_train[:n_train]
        self.x_test, self.y_test = d.x_test[:n_test], d.y_test[:n_test]


TINY = dict(tasks=3, epochs=1, hidden=(12,), T=8, K=4, fixed_batch=8, ms=(5.0,))


def replay_fixed(config, data, m):
    """The twin's sequence by the letter of the module text: task 1 as it is, then the pixels
    permuted by nmflow continual's permutations; one batch order generator (seed + 1000) over
    the whole sequence; one LFSR from the twin's seed; each task's biases saved after it and used
    to measure it; a task not yet learned is measured with the current biases."""
    cfg = fx.FixedEqPropConfig(sizes=(64, *config.hidden, 10), T=config.T, K=config.K,
                               beta_shift=2, lr_shifts=config.lr_shifts,
                               batch=config.fixed_batch, weights="binary", m=m,
                               decay_shift=config.decay_shift)
    params, lfsr = fx.init_params(cfg), fx.Lfsr32(cfg.lfsr_seed)
    rng = np.random.default_rng(config.seed + 1000)
    perms = permutations(config.tasks, 64, config.seed)
    assert (perms[0] == np.arange(64)).all()
    scale = int(data.x_train.max())
    saved, matrix = [], []
    for t, perm in enumerate(perms):
        x = fx.inputs_to_raw(data.x_train[:, perm], scale)
        for _ in range(config.epochs):
            order = rng.permutation(len(data.y_train))
            for first in range(0, len(order), config.fixed_batch):
                idx = order[first:first + config.fixed_batch]
                params, _ = fx.train_step(cfg, params, x[idx], data.y_train[idx], lfsr)
        saved.append([b.copy() for b in params["b"]])
        row = []
        for j, p in enumerate(perms):
            test = fx.inputs_to_raw(data.x_test[:, p], scale)
            got = fx.predict(cfg, {"W": params["W"], "b": saved[min(j, t)]}, test)
            row.append(float((got == data.y_test).mean()))
        matrix.append(row)
    return matrix, params


@pytest.mark.parametrize("m", [0.0, 5.0])
def test_fixed_run_equals_its_replay(m):
    config = ec.EqPropContinualConfig(**TINY)
    data = Subset()
    record, params = ec.run_fixed(config, data, m)
    matrix, replay = replay_fixed(config, data, m)
    assert record["after"] == matrix
    assert record["final"] == matrix[-1]
    assert record["learned"] == [matrix[t][t] for t in range(config.tasks)]
    for a, b in zip(params["W"], replay["W"]):
        assert (a == b).all()
    assert record["where"] == "fixed" and record["weights"] == "binary"
    assert record["method"] == ("eqprop_meta" if m else "eqprop")


def test_fully_consolidated_hidden_weights_never_flip():
    # f_meta(1e6, W_h) is 0 in the table for every W_h != 0: no step toward 0 passes, so no
    # binary weight changes sign, whatever the tasks ask; with m = 0 some do.
    config = ec.EqPropContinualConfig(**dict(TINY, ms=(1e6,)))
    data = Subset()
    start = fx.init_params(ec.fixed_config(config, 64, 10, 0.0))
    for m, flips_expected in ((1e6, False), (0.0, True)):
        _, params = ec.run_fixed(config, data, m)
        flips = sum(int(((w0 >= 0) != (w >= 0))[w0 != 0].sum())
                    for w0, w in zip(start["W"], params["W"]))
        assert (flips > 0) == flips_expected, (m, flips)


def test_task_biases_are_each_tasks_own():
    config = ec.EqPropContinualConfig(**TINY)
    data = Subset()
    _, params = ec.run_fixed(config, data, 0.0)
    biases = params["task_biases"]
    assert len(biases) == config.tasks
    assert any((a != b).any() for a, b in zip(biases[0], biases[-1]))
    assert all((a == b).all() for a, b in zip(biases[-1], params["b"]))


def test_float_run_learns_and_forgets():
    config = ec.EqPropContinualConfig(**dict(TINY, epochs=4, hidden=(32,), T=20, K=8))
    record = ec.run_float(config, load_digits(), 0.0)
    assert record["where"] == "float"
    assert len(record["after"]) == config.tasks and all(len(r) == config.tasks
                                                       for r in record["after"])
    assert min(record["learned"]) > 0.4            # each task learned well above chance (0.1)
    assert record["after"][0][1] < 0.4             # the next task's permutation is not known


@pytest.mark.parametrize("changes, words", [
    ({"tasks": 0}, "tasks must be"),
    ({"hidden": ()}, "hidden must give"),
    ({"fixed_batch": 3}, "fixed_batch must be a power of two"),
    ({"lrs": (0.1,)}, "lrs must give one value per weight layer"),
    ({"beta": 0.3}, "beta must be a power of two"),
    ({"ms": (-1.0,)}, "ms must be"),
    ({"task_biases": "yes"}, "task_biases must be True or False"),
])
def test_impossible_settings_are_refused(changes, words):
    with pytest.raises(NmflowError, match=words):
        ec.EqPropContinualConfig(**changes)


CLI_TINY = ["--tasks", "2", "--epochs", "1", "--hidden", "8", "--ms", "20"]


@pytest.mark.slow
def test_eqprop_continual_command_writes_its_files(tmp_path, capsys):
    out = tmp_path / "ec"
    assert cli.main(["eqprop", "continual", "--out", str(out), *CLI_TINY]) == 0
    result = json.loads((out / "eqprop_continual.json").read_text())
    runs = {(r["method"], r["where"], r["m"]) for r in result["runs"]}
    assert runs == {("eqprop", "float", 0.0), ("eqprop_meta", "float", 20.0),
                    ("eqprop", "fixed", 0.0), ("eqprop_meta", "fixed", 20.0),
                    ("bp_plain", "float", 0.0), ("bp_meta", "float", 40.0),
                    ("bp_ewc", "float", 0.0)}
    for run in result["runs"]:
        assert run["weights"] == "binary" and len(run["final"]) == 2
        assert all(0.0 <= a <= 1.0 for a in run["final"])
    assert result["board_equals_twin"] is None and "not run" in result["board"]
    assert result["settings"]["hidden"] == [8] and result["baselines"]["steps"] == 15
    rows = (out / "eqprop_continual.csv").read_text().splitlines()
    assert rows[0] == "method,m,where,after_task,task,accuracy" and len(rows) == 1 + 7 * 4
    assert (out / "eqprop_continual.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"].endswith("eqprop_continual.json")
    # resumed: the same runs, nothing run again
    assert cli.main(["eqprop", "continual", "--out", str(out), *CLI_TINY, "--resume"]) == 0
    again = json.loads((out / "eqprop_continual.json").read_text())
    assert again["runs"] == result["runs"]


@pytest.mark.parametrize("argv, words", [
    (["--ms", "-1"], "--ms must give values of m"),
    (["--ms", "x"], "--ms must be"),
    (["--lr-shifts", "2"], "--lr-shifts must give 2 shifts"),
    (["--tasks", "0"], "--tasks must be"),
    (["--decay-shift", "63"], "--decay-shift must be"),
    (["--bp-m", "0"], "--bp-m must be"),
    (["--port", "sim"], "--port needs --board-samples"),
    (["--board-samples", "5", "--board-lanes", "3"], "--board-lanes must be a power of two"),
    (["--board-samples", "0"], "--board-samples must be"),
    (["--board-storage", "spram"], "--board-storage needs --board-samples"),
    (["--board-samples", "5", "--board-storage", "flash"],
     "--board-storage must be memory or spram, not 'flash'"),
    (["--board-samples", "5", "--board-storage", "spram", "--port", "/dev/ttyUSB1"],
     "--board-storage is for a simulated board"),
    (["--board-samples", "5", "--board-storage", "spram"],
     "--board-lanes must be at most 4, not 16"),
])
def test_eqprop_continual_bad_options(tmp_path, capsys, argv, words):
    out = tmp_path / "bad"
    assert cli.main(["eqprop", "continual", "--out", str(out), *argv]) != 0
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# -- through a simulated board ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("storage", ["memory", "spram"])
def test_board_run_equals_the_twin_in_every_task(tmp_path, storage):
    # spram: the hidden weights in single-port RAMs as the iCEBreaker keeps them, loaded over
    # the link before each task's samples
    from nmflow.flow.eqprop_continual import run_eqprop_continual
    config = ec.EqPropContinualConfig(tasks=2, epochs=1, hidden=(4,), T=4, K=2, fixed_batch=1,
                                      lr_shifts=(1, 2), ms=(10.0,), decay_shift=6)
    data = Subset(24, 20)
    board = {"config": config, "port": "sim", "lanes": 4, "samples": 3, "baudrate": 1_000_000,
             "timeout": 120.0, "ms": (10.0,), "storage": storage}
    result = run_eqprop_continual(tmp_path, config, data, baselines=False, board=board,
                                  workers=1)
    boards = [r for r in result["runs"] if r["where"] == "board"]
    assert [r["m"] for r in boards] == [10.0]
    assert result["board_equals_twin"] is True
    for run in boards:
        assert len(run["board_mismatches"]) == 2 and run["board_equals_twin"]
        # the pair codes read back (READ_C) were compared in every task
        assert all(m["pair_codes"] == 0 for m in run["board_mismatches"])
        assert run["board_samples_per_task"] == 3
        # the board run is the twin's run at batch 1: the same matrix
        alone, _ = ec.run_fixed(config, data, run["m"])
        assert run["after"] == alone["after"]
    assert result["board"]["lanes"] == 4 and result["board"]["storage"] == storage
    assert all(run["storage"] == storage for run in boards)


def test_a_board_that_differs_is_counted():
    config = ec.EqPropContinualConfig(tasks=2, epochs=1, hidden=(8,), T=4, K=2, fixed_batch=1,
                                      lr_shifts=(1, 2), ms=(10.0,))

    def off_by_one(params, state, xs, ys):
        W = [w.copy() for w in params["W"]]
        W[0][0, 0] = -W[0][0, 0] - 1                   # one hidden weight, and its sign
        return {"W": W, "b": [b + 1 for b in params["b"]]}

    record, _ = ec.run_fixed(config, Subset(24, 20), 10.0, board=off_by_one, board_samples=2)
    assert record["where"] == "board" and record["board_equals_twin"] is False
    first = record["board_mismatches"][0]
    assert first["binary_weights"] >= 1 and first["hidden_weights"] >= 1
    assert first["biases"] == 8 + 10
    assert "pair_codes" not in first                    # this board read back no codes


def test_a_pair_code_that_differs_is_counted():
    # the board trains exactly as the twin (hidden weights equal) but one pair code read back
    # is not its hidden weight's sign
    config = ec.EqPropContinualConfig(tasks=1, epochs=1, hidden=(8,), T=4, K=2, fixed_batch=1,
                                      lr_shifts=(1, 2), ms=(10.0,))
    fixed = ec.fixed_config(config, 64, 10, 10.0)

    def one_code_off(params, state, xs, ys):
        lfsr = fx.Lfsr32(int(state))
        for x, y in zip(xs, ys):
            params, _ = fx.train_step(fixed, params, x.reshape(1, -1), [y], lfsr)
        codes = [np.where(w < 0, 0b01, 0b10) for w in params["W"]]
        codes[1][2, 3] ^= 0b11
        return dict(params, codes=codes)

    record, _ = ec.run_fixed(config, Subset(24, 20), 10.0, board=one_code_off, board_samples=2)
    assert record["board_equals_twin"] is False
    assert record["board_mismatches"] == [
        {"hidden_weights": 0, "binary_weights": 0, "biases": 0, "pair_codes": 1}]


def test_a_board_run_needs_batch_one():
    config = ec.EqPropContinualConfig(tasks=2, epochs=1, hidden=(8,), fixed_batch=4)
    with pytest.raises(NmflowError, match="fixed_batch must be 1 for a board run"):
        ec.run_fixed(config, Subset(24, 20), 0.0, board=lambda *a: None)


@pytest.mark.parametrize("argv, words", [
    (["--m", "3"], "--m must be a number >= 0, and 0 unless --weights binary"),
    (["--weights", "binary", "--m", "-1"], "--m must be a number >= 0"),
    (["--weights", "binary", "--m", "x"], "--m must be a finite number"),
    (["--weights", "ternary"], "--weights must be"),
    (["--decay-shift", "70"], "--decay-shift must be"),
    (["--alpha-scale", "1.25"], "--alpha-scale must be 1 unless --weights binary"),
    (["--weights", "binary", "--alpha-scale", "-1"], "--alpha-scale must be a positive finite"),
    (["--weights", "binary", "--alpha-scale", "50"], "must hold alpha_1 = 50 / (2 sqrt(32))"),
])
def test_unit_commands_refuse_bad_binary_options(tmp_path, capsys, argv, words):
    out = tmp_path / "bad"
    assert cli.main(["eqprop", "sim", "--out", str(out), *argv]) != 0
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
