"""Accuracy under PCSA read errors: the golden core (nmflow.golden.bersweep) and ``ber-sweep``."""

import json
import re
import sys
import types

import numpy as np
import pytest

import nmflow.golden
from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.golden.bersweep import (accuracy_with_errors, classify_with_errors, pass_accuracies,
                                    rate_grid, read_per_image)
from nmflow.golden.readerrors import ErrorRates
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.flow import sweep as sweep_flow
from nmflow.scripts import bersweep as command
from nmflow.scripts import cli


def refuses(message, make):
    with pytest.raises(NmflowError, match=f"^{re.escape(message)}$"):
        make()


def balanced(model):
    """``model`` with unit scale and no offset, so that the scores, not the offsets, decide."""
    last = model.layers[-1]
    ones = np.ones(last.n_out, dtype=np.int64)
    return hwmodel.HardwareModel(model.input_bits, model.weight_kind, (
        *model.layers[:-1], hwmodel.Layer(last.weights, "none", scale=ones, offset=0 * ones)))


@pytest.fixture(scope="module")
def tnn():
    return balanced(random_model([24, 16, 12, 5], input_bits=4, weight_kind="ternary", seed=3))


@pytest.fixture(scope="module")
def data(tnn):
    x = random_inputs(tnn, 60, seed=1)
    y = reference(tnn, x).classes.copy()
    y[::4] = (y[::4] + 1) % tnn.n_classes           # a quarter wrong: accuracy 0.75 exactly
    return x, y


# -- golden core ------------------------------------------------------------------------------------

def test_zero_rates_give_the_reference_exactly(tnn, data):
    x, y = data
    golden = reference(tnn, x)
    scores, classes = classify_with_errors(tnn, x, ErrorRates(), np.random.default_rng(5))
    assert (scores == golden.scores).all() and (classes == golden.classes).all()
    mean, std = accuracy_with_errors(tnn, x, y, ErrorRates(), passes=3, seed=2)
    assert mean == float((golden.classes == y).mean()) == 0.75 and std == 0.0


def test_binary_model_at_zero_rates():
    bnn = random_model([20, 10, 4], input_bits=3, weight_kind="binary", seed=1)
    x = random_inputs(bnn, 30, seed=2)
    scores, classes = classify_with_errors(bnn, x, ErrorRates(), np.random.default_rng(0))
    assert (scores == reference(bnn, x).scores).all()


@pytest.mark.parametrize("kind", ["ternary", "binary"])
def test_a_conv_network_at_zero_rates_and_with_errors(kind):
    """Convolutions (padding, pooling, several channels) under read errors: at zero rates the
    reference exactly; with errors, each image its own kernel, applied at every position of
    its map (checked against the reference on a model holding that image's weights)."""
    from nmflow.golden.hwmodel import HardwareModel, Layer
    from nmflow.golden.synthetic import random_conv_model
    model = random_conv_model("c4k3p1-p2-c3k2-f5", (2, 5, 6), weight_kind=kind, seed=3)
    x = random_inputs(model, 6, seed=4)
    scores, classes = classify_with_errors(model, x, ErrorRates(), np.random.default_rng(0))
    golden = reference(model, x)
    assert (scores == golden.scores).all() and (classes == golden.classes).all()
    rates = ErrorRates(type1=0.2) if kind == "binary" else ErrorRates(0.1, 0.1, 0.1)
    scores, _ = classify_with_errors(model, x, rates, np.random.default_rng(7))
    drawn = read_per_image(model, len(x), rates, np.random.default_rng(7))
    for n in range(len(x)):
        layers = [Layer(w[n], layer.activation, t_hi=layer.t_hi, t_lo=layer.t_lo,
                        scale=layer.scale, offset=layer.offset, conv=layer.conv)
                  for layer, w in zip(model.layers, drawn)]
        seen = HardwareModel(input_bits=model.input_bits, weight_kind=kind, layers=layers)
        assert (scores[n] == reference(seen, x[n:n + 1]).scores[0]).all()
    assert (scores != golden.scores).any()


def test_each_image_draws_its_own_errors(tnn):
    rates = ErrorRates(type1=0.1, type2=0.1, type3=0.2)
    weights = read_per_image(tnn, 2, rates, np.random.default_rng(0))
    for layer, w in zip(tnn.layers, weights):
        assert w.shape == (2, *layer.weights.shape) and w.dtype == np.int8
        assert (w[0] != w[1]).any()
        assert (w[0] != layer.weights).any() and (w[1] != layer.weights).any()
    # the same input twice gets two different error patterns, so (at a high rate) other scores
    x = np.repeat(random_inputs(tnn, 1, seed=4), 2, axis=0)
    scores, _ = classify_with_errors(tnn, x, ErrorRates(type1=0.3), np.random.default_rng(1))
    assert (scores[0] != scores[1]).any()


def test_error_frequencies_per_image(tnn):
    """Over many reads, each type hits its eligible weights at its rate, and only them."""
    w = tnn.layers[1].weights
    count = 2000
    for kind, rate in (("type1", 0.05), ("type2", 0.2), ("type3", 0.3)):
        read = read_per_image(tnn, count, ErrorRates.only(kind, rate),
                              np.random.default_rng(7))[1].astype(np.int64)
        nonzero = np.broadcast_to(w != 0, read.shape)
        if kind == "type1":
            hit, eligible = read == -w, nonzero
        elif kind == "type2":
            hit, eligible = read == 0, nonzero
        else:
            hit, eligible = read != 0, ~nonzero
        assert (read[~eligible] == np.broadcast_to(w, read.shape)[~eligible]).all()
        frequency = hit[eligible].mean()
        n = eligible.sum()
        assert abs(frequency - rate) < 5 * np.sqrt(rate * (1 - rate) / n)


def test_seed_decides_the_draws(tnn, data):
    x, y = data
    rates = ErrorRates(type1=0.05, type3=0.1)
    scores = [classify_with_errors(tnn, x, rates, np.random.default_rng(seed))[0]
              for seed in (11, 11, 12)]
    assert (scores[0] == scores[1]).all() and (scores[0] != scores[2]).any()
    rates = ErrorRates(type1=0.3)
    first = pass_accuracies(tnn, x, y, rates, passes=4, seed=11)
    assert (first == pass_accuracies(tnn, x, y, rates, passes=4, seed=11)).all()
    assert (first != pass_accuracies(tnn, x, y, rates, passes=4, seed=12)).any()
    assert len(set(first)) > 1                       # passes draw differently
    mean, std = accuracy_with_errors(tnn, x, y, rates, passes=4, seed=11)
    assert mean == first.mean() and std == pytest.approx(first.std(ddof=1))


def test_refusals(tnn, data):
    x, y = data
    bnn = random_model([24, 8, 5], input_bits=4, weight_kind="binary", seed=0)
    refuses("passes must be a positive integer, not 0",
            lambda: accuracy_with_errors(tnn, x, y, ErrorRates(), passes=0))
    refuses("seed must be a non-negative integer, not -1",
            lambda: accuracy_with_errors(tnn, x, y, ErrorRates(), seed=-1))
    refuses("error rate type3 must be in [0, 1], not 1.5", lambda: ErrorRates(type3=1.5))
    refuses("error rates type2 and type3 must be 0 for a binary model (its weights are +-1, "
            "read without a zero), not 0.0 and 0.1",
            lambda: accuracy_with_errors(bnn, x, y, ErrorRates(type3=0.1)))
    refuses("labels y must be 60 integers, one per input, not int64 of shape [59]",
            lambda: accuracy_with_errors(tnn, x, y[1:], ErrorRates()))
    refuses("rates must be an ErrorRates, not dict",
            lambda: accuracy_with_errors(tnn, x, y, {"type1": 0.1}))


def test_rate_grid():
    assert rate_grid(1e-3, 1.0, 1) == [1e-3, 1e-2, 0.1, 1.0]
    grid = rate_grid()
    assert grid[0] == 1e-4 and grid[-1] == 0.5 and 1e-2 in grid and 0.1 in grid
    assert all(b / a > 1.5 for a, b in zip(grid, grid[1:]))
    refuses("high rate must be in (0, 1] on a log grid, not 2", lambda: rate_grid(1e-3, 2))
    refuses("low rate must be below high rate, not 0.5 >= 0.1", lambda: rate_grid(0.5, 0.1))


@pytest.mark.slow
def test_type1_hurts_more_than_type3_on_a_trained_tnn():
    from nmflow.flow import DatasetSpec, load_dataset
    from nmflow.golden.export import export
    from nmflow.golden.train import TrainConfig, train

    dataset = load_dataset(DatasetSpec())
    net, _ = train(TrainConfig.tnn(hidden=(64, 64), epochs=15), dataset)
    model = export(net, dataset.input_bits)
    x, y = dataset.x_test, dataset.y_test
    clean, _ = accuracy_with_errors(model, x, y, ErrorRates(), passes=1)
    type1, _ = accuracy_with_errors(model, x, y, ErrorRates(type1=0.1), passes=3)
    type2, _ = accuracy_with_errors(model, x, y, ErrorRates(type2=0.1), passes=3)
    type3, _ = accuracy_with_errors(model, x, y, ErrorRates(type3=0.1), passes=3)
    assert clean > 0.9
    assert type1 < type2 < clean and type1 < type3 - 0.05
    assert type3 > clean - 0.05


# -- the command ------------------------------------------------------------------------------------

CHIP = {"100us": ErrorRates(1e-6, 1e-2, 0.065), "1us": ErrorRates(1e-6, 1e-2, 0.185)}


@pytest.fixture
def fake_device(monkeypatch):
    """A stand-in for nmflow.golden.device (the command imports it lazily)."""
    calls = []

    def chip_rates(*, samples, seed):
        calls.append((samples, seed))
        return dict(CHIP)

    device = types.SimpleNamespace(chip_rates=chip_rates)
    monkeypatch.setitem(sys.modules, "nmflow.golden.device", device)
    monkeypatch.setattr(nmflow.golden, "device", device, raising=False)
    return calls


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    hwmodel.save(random_model([64, 16, 10], input_bits=5, weight_kind="ternary", seed=1),
                 folder / "tnn")
    hwmodel.save(random_model([64, 16, 10], input_bits=5, weight_kind="binary", seed=2),
                 folder / "bnn")
    return folder / "tnn.json", folder / "bnn.json"


def sweep(models, out, *extra):
    return cli.main(["ber-sweep", "--tnn", str(models[0]), "--bnn", str(models[1]), "--out", str(out),
                         "--rates", "0.01,0.1", "--passes", "2", "--limit", "40", "--jobs", "2",
                         *map(str, extra)])


def test_command_writes_json_csv_png(models, tmp_path, fake_device, capsys):
    assert sweep(models, tmp_path / "a", "--seed", "3", "--chip-samples", "500") == 0
    assert fake_device == [(500, 3)]
    result = json.loads((tmp_path / "a" / "ber.json").read_text())
    assert set(result["tnn"]) == {"type1", "type2", "type3"} and set(result["bnn"]) == {"type1"}
    for kind, types_ in (("tnn", ("type1", "type2", "type3")), ("bnn", ("type1",))):
        for kind_type in types_:
            curve = result[kind][kind_type]
            assert [point[0] for point in curve] == [0.01, 0.1]
            assert all(len(point) == 3 and 0 <= point[1] <= 1 and point[2] >= 0
                       for point in curve)
    assert set(result["chip"]) == {"clean", "100us", "1us"}
    assert all(0 <= value <= 1 for value in result["chip"].values())
    assert result["chip_rates"]["1us"] == CHIP["1us"].as_dict()
    # the clean entry is the reference's accuracy on the first 40 test images
    from nmflow.flow import DatasetSpec, load_dataset
    dataset = load_dataset(DatasetSpec())
    tnn = hwmodel.load(models[0])
    expected = float((reference(tnn, dataset.x_test[:40]).classes == dataset.y_test[:40]).mean())
    assert result["chip"]["clean"] == result["clean"]["tnn"] == expected
    rows = (tmp_path / "a" / "ber.csv").read_text().splitlines()
    assert rows[0] == "model,curve,type1,type2,type3,mean_accuracy,std_accuracy"
    assert len(rows) == 1 + 2 + 4 * 2 + 2 + 2
    assert (tmp_path / "a" / "ber.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(capsys.readouterr().out)["chip"] == result["chip"]
    # the same seed gives the same file, another seed other curves
    assert sweep(models, tmp_path / "b", "--seed", "3", "--jobs", "1") == 0
    again = json.loads((tmp_path / "b" / "ber.json").read_text())
    assert all(again[k] == result[k] for k in ("tnn", "bnn", "chip", "clean", "table42"))
    assert sweep(models, tmp_path / "c", "--seed", "4") == 0
    other = json.loads((tmp_path / "c" / "ber.json").read_text())
    assert other["tnn"] != result["tnn"]


@pytest.mark.parametrize("extra, message", [
    (["--passes", "0"], "ber-sweep: --passes must be an integer from 1 to 1000, not '0' (see "
                        "nmflow ber-sweep --help)"),
    (["--rates", "0.1,1.5"], "--rates must be error rates in [0, 1], not 1.5"),
    (["--rates", "-0.01"], "--rates must be error rates in [0, 1], not -0.01"),
    (["--seed", "-2"], "ber-sweep: --seed must be an integer from 0 to 2147483647, not '-2' "
                       "(see nmflow ber-sweep --help)"),
    (["--tnn", "no/such/model.json"], "--tnn must name an existing hardware model file, not "
                                      "'no/such/model.json' (no such file)"),
])
def test_command_refusals(models, tmp_path, fake_device, capsys, extra, message):
    assert sweep(models, tmp_path, *extra) == 2
    assert capsys.readouterr().err == f"nmflow: error: {message}\n"
    assert not (tmp_path / "ber.json").exists()


def test_command_refuses_a_model_of_the_wrong_kind(models, tmp_path, fake_device, capsys):
    code = cli.main(["ber-sweep", "--tnn", str(models[1]), "--bnn", str(models[1]), "--out",
                         str(tmp_path), "--rates", "0.1"])
    assert code == 2
    assert capsys.readouterr().err == (f"nmflow: error: --tnn must be a ternary hardware model, "
                                       f"not a binary one ({str(models[1])!r})\n")


def test_real_device_model_gives_chip_rates():
    """nmflow.golden.device gives what the chip entry needs."""
    rates = sweep_flow._chip_rates(2000, 0)
    assert set(rates) == {"100us", "1us"}
    for value in rates.values():
        assert set(value) == {"type1", "type2", "type3"}
        assert all(0 <= r <= 1 for r in value.values())


def test_hidden_sizes_are_checked(tmp_path, fake_device):
    refuses("--hidden must be 1 to 16 layer widths from 1 to 65536 such as 256,256, not (0,)",
            lambda: command.run_sweep(tmp_path, hidden=(0,)))
    refuses("--jobs must be an integer from 1 to 8 (four per usable core), not 0".replace(
        "8", str(sweep_flow.max_jobs())), lambda: command.run_sweep(tmp_path, jobs=0))
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["ber-sweep", "--hidden", "64,x"])
    assert cli.parser().parse_args(["ber-sweep"]).hidden == command.DEFAULT_HIDDEN
    assert cli.parser().parse_args(["ber-sweep", "--hidden", "32,16"]).hidden == (32, 16)


def test_arch_and_hidden_are_one_or_the_other(tmp_path, capsys):
    assert cli.main(["ber-sweep", "--out", str(tmp_path), "--arch", "c4k3-f10", "--hidden",
                     "32,16"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "nmflow: error: --hidden and --arch name the layers twice: give one of them")
    assert cli.parser().parse_args(["ber-sweep", "--arch", "c4k3-f10"]).arch == "c4k3-f10"
