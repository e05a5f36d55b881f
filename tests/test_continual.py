"""Continual learning experiments, the fixed-point twin of the rule and `nmflow continual`.

The fixed-point twin is checked against a straightforward Python-int reimplementation written
from the documented steps (fractions for the rounding, no NumPy), with ==.
"""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflow.errors import NmflowError
from nmflow.fixedpoint import FixedFormat
from nmflow.golden.continual import (ContinualConfig, ContinualNet, class_balanced_subsets,
                                     fisher_binary, permutations, run_continual, run_stream,
                                     shuffle_importance)
from nmflow.golden.datasets import Dataset
from nmflow.golden.metafixed import (DEFAULT_U_FORMAT, DEFAULT_W_FORMAT, MetaFixedRule,
                                     binary_weight, build_table)
from nmflow.golden.metaplastic import MetaplasticAdam, metaplastic_update
from nmflow.scripts import cli


from helpers import one_torch_thread  # noqa: F401 (autouse: one torch thread per test)

# -- fixed-point twin --------------------------------------------------------------------------


def _ref_table(m, w_frac, mag_bits, size, input_bits, f_bits):
    shift = mag_bits - input_bits
    out = []
    for i in range(size):
        centre = (i * 2 ** shift + (2 ** shift - 1) / 2) / 2 ** w_frac
        f = 1 - math.tanh(m * centre) ** 2
        out.append(math.floor(f * 2 ** f_bits + 0.5))
    return out


def _ref_round(x, s):
    if s <= 0:
        return x * 2 ** (-s)
    return math.floor(Fraction(x, 2 ** s) + Fraction(1, 2))


def _ref_update(w, d, table, shift, w_fmt, u_fmt, f_bits):
    shrink = (w > 0 and d > 0) or (w < 0 and d < 0)
    index = min(abs(w) // 2 ** shift, len(table) - 1)
    if shrink:
        delta = _ref_round(d * table[index], u_fmt.frac_bits + f_bits - w_fmt.frac_bits)
    else:
        delta = _ref_round(d, u_fmt.frac_bits - w_fmt.frac_bits)
    return max(w_fmt.min_raw, min(w_fmt.max_raw, w - delta))


CASES = [
    dict(m=20.0),
    dict(m=1.35, table_size=64, input_bits=9, f_bits=8),
    dict(m=5.0, w_format=FixedFormat(True, 1, 6), u_format=FixedFormat(True, 0, 7),
         table_size=7, input_bits=5, f_bits=5),
    dict(m=3.0, w_format=FixedFormat(True, 3, 12), u_format=FixedFormat(True, 2, 9),
         table_size=100, f_bits=10),              # u with fewer fraction bits than w
    dict(m=0.0, table_size=16, f_bits=6),
]


@pytest.mark.parametrize("case", CASES)
def test_fixed_rule_equals_python_int_reference(case):
    rule = MetaFixedRule(**case)
    w_fmt, u_fmt = rule.w_format, rule.u_format
    mag_bits = w_fmt.width - 1
    table = _ref_table(case["m"], w_fmt.frac_bits, mag_bits, rule.table_size, rule.input_bits,
                       rule.f_bits)
    assert rule.table.tolist() == table
    rng = np.random.default_rng(7)
    n = 20000
    w = rng.integers(w_fmt.min_raw, w_fmt.max_raw + 1, n)
    d = rng.integers(u_fmt.min_raw, u_fmt.max_raw + 1, n)
    # small updates, both format ends and zeros are over-represented
    d[: n // 4] = rng.integers(-64, 65, n // 4)
    w[n // 4: n // 4 + 8] = [w_fmt.min_raw, w_fmt.max_raw, 0, 1, -1, w_fmt.min_raw + 1,
                             w_fmt.max_raw - 1, 0]
    d[n // 4: n // 4 + 8] = [u_fmt.max_raw, u_fmt.min_raw, 5, 0, u_fmt.min_raw, 0, -1, -7]
    got = rule.update(w, d)
    shift = mag_bits - rule.input_bits
    expected = [_ref_update(int(a), int(b), table, shift, w_fmt, u_fmt, rule.f_bits)
                for a, b in zip(w, d)]
    assert got.tolist() == expected


@settings(max_examples=300, deadline=None)
@given(w=st.integers(-2 ** 15, 2 ** 15 - 1), d=st.integers(-2 ** 15, 2 ** 15 - 1),
       m=st.sampled_from([0.0, 0.5, 2.0, 20.0, 40.0]))
def test_fixed_rule_property(w, d, m):
    rule = MetaFixedRule(m, table_size=128, f_bits=10)
    table = _ref_table(m, 12, 15, 128, rule.input_bits, 10)
    got = int(rule.update(np.array([w]), np.array([d]))[0])
    assert got == _ref_update(w, d, table, 15 - rule.input_bits, DEFAULT_W_FORMAT,
                              DEFAULT_U_FORMAT, 10)


def test_fixed_rule_directed_edges():
    rule = MetaFixedRule(20.0)
    lo, hi = DEFAULT_W_FORMAT.min_raw, DEFAULT_W_FORMAT.max_raw
    # u has 3 more fraction bits than w: a plain step of d is d / 8 rounded half up
    w = np.array([hi, lo, 0, 0, 1, -1, hi, lo, 100])
    d = np.array([-2 ** 15, 2 ** 15 - 1, 12, -12, 4, -4, 2 ** 15 - 1, -2 ** 15, 3])
    got = rule.update(w, d).tolist()
    assert got[0] == hi                      # grows past the top: saturates
    assert got[1] == lo                      # grows past the bottom: saturates
    assert got[2] == -2 and got[3] == 1      # W_h = 0: plain branch, +-12/8 = +-1.5 -> 2, -1
    assert rule.table[0] == 4096             # bin 0 (|w| < 4 LSB): f = 1.0
    assert got[4] == 0 and got[5] == -1      # f = 1: 4/8 = 0.5 -> 1; -0.5 -> 0 (ties up)
    assert got[6] == hi                      # largest |W_h| (clamped index): f ~ 0, no change
    assert got[7] == lo
    assert got[8] == 100                     # 3/8 rounds to 0
    # a sign change: a small positive weight pushed past zero
    assert rule.update(np.array([3]), np.array([800])).tolist() == [3 - 100]
    assert binary_weight(np.array([0, 1, -1, hi, lo])).tolist() == [1, 1, -1, 1, -1]


def test_fixed_rule_m_zero_is_plain_rule():
    rule = MetaFixedRule(0.0)
    rng = np.random.default_rng(3)
    w = rng.integers(-2 ** 15, 2 ** 15, 5000)
    d = rng.integers(-2 ** 15, 2 ** 15, 5000)
    plain = np.clip(w - ((d + 4) >> 3), -2 ** 15, 2 ** 15 - 1)
    assert rule.update(w, d).tolist() == plain.tolist()


def test_fixed_rule_close_to_float_rule():
    m = 20.0
    rule = MetaFixedRule(m)
    err = rule.table_error()
    assert err < 0.01
    rng = np.random.default_rng(5)
    w = rng.integers(-8000, 8000, 20000)                  # |W_h| < 2
    d = rng.integers(-3000, 3000, 20000)
    got = rule.update(w, d) / 2 ** 12
    want = metaplastic_update(w / 2 ** 12, d / 2 ** 15, 1.0, m)
    bound = err * np.abs(d) / 2 ** 15 + 2 ** -13 + 1e-12  # table error + half an LSB
    assert np.all(np.abs(got - want) <= bound)


def test_table_matches_hard_threshold():
    fmt = FixedFormat(True, 3, 4)
    table = build_table(0.5, fmt, table_size=128, input_bits=7, f_bits=4, kind="hard")
    # bin i is the raw magnitude i, centre i / 16: entries 16 for |W_h| < 0.5 (raw < 8), else 0
    assert table.tolist() == [16] * 8 + [0] * 120


@pytest.mark.parametrize("kwargs, message", [
    (dict(m=-1.0), "m must be a non-negative finite number"),
    (dict(m=float("nan")), "m must be a non-negative finite number"),
    (dict(m=1.0, table_size=0), "table_size must be an integer from"),
    (dict(m=1.0, input_bits=16), "input_bits must be an integer from"),
    (dict(m=1.0, f_bits=0), "f_bits must be an integer from"),
    (dict(m=1.0, w_format=FixedFormat(False, 4, 4)), "w_format must be signed"),
    (dict(m=1.0, w_format=FixedFormat(True, 0, 0)), "w_format must be at least 2 bits"),
    (dict(m=1.0, u_format=FixedFormat(True, 20, 30), f_bits=20), "bit product"),
    (dict(m=1.0, kind="soft"), "kind must be one of"),
])
def test_fixed_rule_refuses_impossible_settings(kwargs, message):
    with pytest.raises(NmflowError, match=message):
        MetaFixedRule(**kwargs)


def test_fixed_rule_refuses_values_outside_formats():
    rule = MetaFixedRule(1.0)
    with pytest.raises(NmflowError, match="w_raw must lie"):
        rule.update(np.array([2 ** 15]), np.array([0]))
    with pytest.raises(NmflowError, match="d_raw must lie"):
        rule.update(np.array([0]), np.array([-2 ** 15 - 1]))
    with pytest.raises(NmflowError, match="shape"):
        rule.update(np.zeros(2, dtype=np.int64), np.zeros(3, dtype=np.int64))


def test_torch_rule_keeps_weights_on_the_grid():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.empty(8, 8).uniform_(-0.1, 0.1))
    opt = MetaplasticAdam([p], lr=0.01, weight_rule=MetaFixedRule(5.0).torch_rule())
    for _ in range(20):
        p.grad = torch.randn(8, 8)
        opt.step()
    raw = p.detach().double() * 2 ** 12
    assert torch.equal(raw, raw.round()) and raw.abs().max() < 2 ** 15


# -- experiments -------------------------------------------------------------------------------

def _toy_dataset(n_train=200, n_test=100, features=16, seed=0):
    """Separable 4-class data: class c lights up features 4c..4c+3."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 4
        x = rng.integers(0, 4, (n, features))
        for c in range(4):
            x[y == c, 4 * c:4 * c + 4] += 12
        return x.astype(np.uint8), y.astype(np.int64)
    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return Dataset(x_train, y_train, x_test, y_test, input_bits=4, name="toy")


def test_permutations_and_subsets():
    perms = permutations(4, 10, seed=3)
    assert perms[0].tolist() == list(range(10))
    assert all(sorted(p.tolist()) == list(range(10)) for p in perms)
    assert perms[1].tolist() != perms[2].tolist()
    assert [p.tolist() for p in permutations(4, 10, seed=3)] == [p.tolist() for p in perms]
    y = np.repeat(np.arange(3), [30, 20, 10])
    parts = class_balanced_subsets(y, 5, seed=1)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(60))           # disjoint and complete
    for part in parts:
        assert np.bincount(y[part], minlength=3).tolist() == [6, 4, 2]
    with pytest.raises(NmflowError, match="subsets must be at most 10"):
        class_balanced_subsets(y, 11, seed=1)


def test_task_specific_batchnorm():
    net = ContinualNet([4, 6, 3], tasks=2)
    with torch.no_grad():
        net.norms[0][0].weight.fill_(2.0)
    net.set_task(1, copy_from_previous=True)
    assert torch.equal(net.norms[1][0].weight, net.norms[0][0].weight)
    with torch.no_grad():
        net.norms[1][0].weight.fill_(3.0)
    assert float(net.norms[0][0].weight.detach()[0]) == 2.0              # a copy, not shared


def test_fisher_is_mean_of_squared_per_image_gradients():
    torch.manual_seed(1)
    net = ContinualNet([5, 4, 3], tasks=1)
    net.eval()
    x = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    fisher = fisher_binary(net, x, y, 0)
    # independent: the same quantities with a single backward per image through a plain
    # float re-implementation of the network's forward pass (binary weights, eval BatchNorm)
    w1 = net.linears[0].weight.detach().clone().requires_grad_(True)
    w2 = net.linears[1].weight.detach().clone().requires_grad_(True)
    bn1, bn2 = net.norms[0]
    total = [torch.zeros_like(w1), torch.zeros_like(w2)]
    for i in range(6):
        b1 = w1 + (torch.where(w1 >= 0, 1.0, -1.0) - w1).detach()
        b2 = w2 + (torch.where(w2 >= 0, 1.0, -1.0) - w2).detach()
        h = torch.nn.functional.batch_norm(x[i:i + 1] @ b1.T, bn1.running_mean, bn1.running_var,
                                           bn1.weight, bn1.bias, False, 0.0, bn1.eps)
        window = (h.abs() <= 1).to(h.dtype).detach()     # STE: gradient where |y| <= 1
        h = torch.where(h >= 0, 1.0, -1.0).detach() + (h - h.detach()) * window
        out = torch.nn.functional.batch_norm(h @ b2.T, bn2.running_mean, bn2.running_var,
                                             bn2.weight, bn2.bias, False, 0.0, bn2.eps)
        g1, g2 = torch.autograd.grad(torch.log_softmax(out, 1)[0, y[i]], (w1, w2))
        total[0] += g1 ** 2
        total[1] += g2 ** 2
    torch.testing.assert_close(fisher[0], total[0] / 6)
    torch.testing.assert_close(fisher[1], total[1] / 6)
    assert fisher[0].abs().sum() > 0


def test_random_consolidation_shuffles_each_layers_fisher():
    torch.manual_seed(2)
    net = ContinualNet([16, 12, 4], tasks=1)
    data = _toy_dataset()
    x = torch.as_tensor(data.x_train[:40], dtype=torch.float32)
    y = torch.as_tensor(data.y_train[:40])
    fisher = fisher_binary(net, x, y, 0)
    shuffled = shuffle_importance(fisher, seed=3, task=1)
    assert len(shuffled) == len(fisher)
    for f, s in zip(fisher, shuffled):
        assert s.shape == f.shape
        assert len(torch.unique(f)) > 1          # non-constant (the last layer sees +-1 inputs,
                                                 # so its Fisher only varies from row to row)
        assert torch.equal(torch.sort(s.flatten()).values, torch.sort(f.flatten()).values)
        assert (s != f).float().mean() > 0.5                    # most synapses got another value
    again = shuffle_importance(fisher, seed=3, task=1)
    assert all(torch.equal(a, b) for a, b in zip(again, shuffled))
    other = shuffle_importance(fisher, seed=3, task=2)
    assert not torch.equal(other[0], shuffled[0])
    with pytest.raises(NmflowError, match="seed must be a non-negative integer, not -1"):
        shuffle_importance(fisher, seed=-1, task=0)


def test_random_consolidation_runs_like_ewc_with_other_synapses():
    data = _toy_dataset()
    config = ContinualConfig(tasks=3, steps=15, batch=20, hidden=(16,),
                             methods=("ewc", "random"), fisher_samples=20, evals_per_task=1)
    ewc, rand = run_continual(config, data)["runs"]
    assert rand["method"] == "random" and rand["m"] == 0.0 and len(rand["final"]) == 3
    assert rand["matrix"][0] == ewc["matrix"][0]          # task 1: no penalty yet, same run
    assert rand["mean_abs_hidden"] != ewc["mean_abs_hidden"]    # then other synapses are held
    again = run_continual(config, data)["runs"][1]
    assert again["matrix"] == rand["matrix"] and again["mean_abs_hidden"] == rand["mean_abs_hidden"]


def test_config_refuses_bad_settings():
    with pytest.raises(NmflowError, match="methods must be one of"):
        ContinualConfig(methods=("meta", "si"))
    with pytest.raises(NmflowError, match="batch must be at least 2"):
        ContinualConfig(batch=1)
    with pytest.raises(NmflowError, match="m must be a non-negative finite number"):
        ContinualConfig(ms=(1.0, -2.0))
    with pytest.raises(NmflowError, match="lr_decay must be a finite number >= 1"):
        ContinualConfig(lr_decay=0.5)


def test_tiny_continual_run_shapes_and_determinism():
    data = _toy_dataset()
    config = ContinualConfig(tasks=2, steps=30, batch=20, hidden=(32,), ms=(5.0,),
                             methods=("plain", "meta", "ewc", "lr_decay"), fisher_samples=20,
                             evals_per_task=3)
    result = run_continual(config, data)
    methods = [(run["method"], run["m"]) for run in result["runs"]]
    assert methods == [("plain", 0.0), ("meta", 5.0), ("ewc", 0.0), ("lr_decay", 0.0)]
    for run in result["runs"]:
        assert len(run["matrix"]) == 2 and all(len(row) == 2 for row in run["matrix"])
        assert run["final"] == run["matrix"][-1]
        assert len(run["curve"]["steps"]) == 6 and run["curve"]["steps"][-1] == 60
        assert all(0.0 <= a <= 1.0 for a in run["final"])
    plain = result["runs"][0]
    assert plain["learned"][0] > 0.9           # the toy task is learned
    again = run_continual(config, data)
    assert [r["matrix"] for r in again["runs"]] == [r["matrix"] for r in result["runs"]]


def test_complex_method_runs_and_differs_from_plain():
    data = _toy_dataset()
    config = ContinualConfig(tasks=2, steps=20, batch=20, hidden=(16,),
                             methods=("plain", "complex"),
                             complex_options=dict(g12=0.3, g23=0.1, g34=0.05), evals_per_task=1)
    plain, complex_ = run_continual(config, data)["runs"]
    assert complex_["method"] == "complex" and len(complex_["final"]) == 2
    assert complex_["mean_abs_hidden"] != plain["mean_abs_hidden"]


def test_complex_options_default_to_short_task_timescales():
    from nmflow.golden.metaplastic import COMPLEX_DEFAULTS, COMPLEX_SHORT_TASKS
    a, b = ContinualConfig(), ContinualConfig()
    assert a.complex_options == COMPLEX_SHORT_TASKS and a.to_dict()["complex_options"] == \
        COMPLEX_SHORT_TASKS
    assert a.complex_options is not b.complex_options                 # one dict per config
    assert a.complex_options is not COMPLEX_SHORT_TASKS                 # not the module's own
    # the thesis' values (eq. 2.8, ~10^4 steps per task) stay the rule's own defaults
    assert COMPLEX_DEFAULTS == dict(g12=1e-2, g23=1e-3, g34=1e-4, eps=3e-5, alpha=5e-3, m=10.0)
    # every rate of the short setting is the thesis' one times the same factor
    ratios = {COMPLEX_SHORT_TASKS[k] / COMPLEX_DEFAULTS[k] for k in ("g12", "g23", "g34", "eps",
                                                                      "alpha")}
    assert max(ratios) == pytest.approx(min(ratios)) and COMPLEX_SHORT_TASKS["g12"] <= 0.5


def test_fixed_point_in_the_loop_follows_fmeta_kind():
    data = _toy_dataset()
    config = ContinualConfig(tasks=2, steps=10, batch=20, hidden=(16,), methods=("meta",),
                             ms=(0.05,), fmeta="hard", fixed_point=True, evals_per_task=1)
    result = run_continual(config, data)
    assert [r["method"] for r in result["runs"]] == ["meta", "meta_fixed"]
    [row] = result["fixed_vs_float"]
    assert row["rule"]["kind"] == "hard" and row["m"] == 0.05


@pytest.mark.slow
def test_metaplasticity_retains_first_task():
    """The paper's effect on a small problem: m = 0 forgets task 1, a large m keeps it."""
    data = _toy_dataset(n_train=400, features=32, seed=2)
    config = ContinualConfig(tasks=3, steps=300, batch=50, hidden=(64, 64), ms=(40.0,),
                             methods=("plain", "meta"), evals_per_task=1, seed=1)
    plain, meta = run_continual(config, data)["runs"]
    assert plain["learned"][0] > 0.95 and meta["learned"][0] > 0.95
    assert meta["final"][0] > plain["final"][0] + 0.15
    assert meta["mean_abs_hidden"][0] > 2 * plain["mean_abs_hidden"][0]


def test_stream_runs():
    data = _toy_dataset()
    out = run_stream(data, subsets=4, steps=10, ms=(0.0, 5.0), hidden=(16,), batch=20)
    assert out["subset_sizes"] == [50] * 4
    assert [len(r["accuracy"]) for r in out["runs"]] == [4, 4]
    assert len(out["baseline"]["accuracy"]) == 4


# -- command line ------------------------------------------------------------------------------

def test_cli_continual_writes_files(tmp_path, capsys):
    out = tmp_path / "cl"
    code = cli.main(["continual", "--out", str(out), "--tasks", "2", "--steps", "8",
                     "--batch", "50", "--hidden", "16", "--m", "0,3", "--methods",
                     "plain,meta,ewc,lr_decay", "--fisher-samples", "10", "--fixed-point",
                     "--stream", "2", "--quiet"])
    assert code == 0
    data = json.loads((out / "continual.json").read_text())
    assert data["dataset"]["name"] == "digits"
    assert {"settings", "runs", "chance", "seconds", "stream"} <= set(data)
    assert [(r["method"], r["m"]) for r in data["runs"]] == [
        ("plain", 0.0), ("meta", 3.0), ("meta_fixed", 3.0), ("ewc", 0.0), ("lr_decay", 0.0)]
    for run in data["runs"]:
        assert len(run["final"]) == 2 and len(run["matrix"]) == 2
        assert {"seconds", "seed", "curve", "learned"} <= set(run)
    for name in ("continual.csv", "continual.png", "stream.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "continual.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "continual.csv").read_text().splitlines()
    assert rows[0].startswith("method,m,task") and len(rows) == 1 + 5 * 2
    [row] = data["fixed_vs_float"]
    assert row["m"] == 3.0 and row["rule"]["w_format"] == "s3.12" and row["table_error"] < 0.01
    assert row["mean_fixed"] == data["runs"][2]["mean_final"]
    printed = capsys.readouterr().out
    assert "task1" in printed and "meta m=3" in printed and "fixed point m=3" in printed
    # one run at a time: the same accuracies (each run seeds itself, not the order it runs in)
    code = cli.main(["continual", "--out", str(tmp_path / "one"), "--tasks", "2", "--steps", "8",
                     "--batch", "50", "--hidden", "16", "--m", "0,3", "--methods",
                     "plain,meta,ewc,lr_decay", "--fisher-samples", "10", "--fixed-point",
                     "--quiet", "--jobs", "1"])
    assert code == 0
    one = json.loads((tmp_path / "one" / "continual.json").read_text())
    assert [r["final"] for r in one["runs"]] == [r["final"] for r in data["runs"]]
    assert [r["matrix"] for r in one["runs"]] == [r["matrix"] for r in data["runs"]]


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "0"], "--tasks must be an integer from 1 to 100, not '0'"),
    (["--steps", "-3"], "--steps must be an integer from 1 to 10000000, not '-3'"),
    (["--batch", "1"], "--batch must be an integer from 2 to 65536 (BatchNorm needs two images), "
                       "not '1'"),
    (["--m", "-1"], "--m must be finite numbers >= 0, not -1.0"),
    (["--m", "nan"], "--m must be finite numbers >= 0"),
    (["--m", "0"], "--m must hold at least one m > 0"),
    (["--methods", "plain,si"], "--methods must be among plain, meta, ewc, random, lr_decay, "
                                "complex, not 'si'"),
    (["--methods", ","], "--methods must name at least one"),
    (["--hidden", "0"], "--hidden must be 1 to 16 comma-separated integers from 1 to 65536"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2147483647, not '-1'"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--lr-decay", "0.5"], "--lr-decay must be a finite number >= 1"),
    (["--dataset", "idx"], "--dataset idx needs --images and --labels"),
    (["--images", "x"], "--images and --labels go with --dataset idx"),
    (["--methods", "plain", "--fixed-point"], "--fixed-point goes with the meta method"),
    (["--stream", "0"], "--stream must be an integer from 1 to 10000, not '0'"),
])
def test_cli_bad_arguments(tmp_path, capsys, argv, message):
    code = cli.main(["continual", "--out", str(tmp_path / "o"), "--steps", "2", "--tasks", "1",
                     *argv])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nmflow: error: ") and message in err[0]
    assert not (tmp_path / "o" / "continual.json").exists()


def test_cli_continual_random_consolidation(tmp_path, capsys):
    out = tmp_path / "cl"
    code = cli.main(["continual", "--out", str(out), "--tasks", "2", "--steps", "6",
                     "--batch", "50", "--hidden", "16", "--methods", "plain,random",
                     "--fisher-samples", "10", "--quiet"])
    assert code == 0
    data = json.loads((out / "continual.json").read_text())
    assert [(r["method"], r["m"]) for r in data["runs"]] == [("plain", 0.0), ("random", 0.0)]
    assert data["settings"]["methods"] == ["plain", "random"]
    assert "random,0,1," in (out / "continual.csv").read_text()
    printed = capsys.readouterr().out
    assert "random consolidation  (" in printed and "random m=" not in printed


def test_cli_default_methods_are_the_librarys():
    from nmflow.golden.continual import DEFAULT_METHODS
    args = cli.parser().parse_args(["continual"])
    assert tuple(args.methods) == DEFAULT_METHODS and "random" in DEFAULT_METHODS


def test_cli_missing_idx_file(tmp_path, capsys):
    code = cli.main(["continual", "--out", str(tmp_path / "o"), "--dataset", "idx", "--images",
                     str(tmp_path / "none"), "--labels", str(tmp_path / "none2")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nmflow: error: ")


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_cli_continual_on_idx_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 8)
    images = rng.integers(0, 40, (80, 5, 5))
    for c in range(10):
        images[labels == c, c // 5, c % 5] = 250          # one bright pixel per class
    _write_idx(tmp_path / "img", images, 0x00000803)
    _write_idx(tmp_path / "lab", labels, 0x00000801)
    out = tmp_path / "o"
    code = cli.main(["continual", "--out", str(out), "--dataset", "idx", "--images",
                     str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "--tasks", "2",
                     "--steps", "5", "--batch", "16", "--hidden", "8", "--m", "10",
                     "--methods", "plain,meta", "--quiet"])
    assert code == 0
    data = json.loads((out / "continual.json").read_text())
    assert data["dataset"]["name"].startswith("idx") and data["dataset"]["images"].endswith("img")
    assert data["dataset"]["features"] == 25 and data["dataset"]["train"] == 64
    assert data["settings"]["tasks"] == 2 and len(data["runs"]) == 2
