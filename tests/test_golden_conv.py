"""Convolutional BNNs and TNNs on the golden side: the float model, its export to the hardware
model (version 3, geometry in the header), and the integer reference, exactly equal."""

import json

import numpy as np
import pytest
import torch

from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.golden.datasets import load_digits
from nmflow.golden.export import export
from nmflow.golden.hwmodel import HardwareModel, Layer
from nmflow.golden.layers import QuantNet
from nmflow.golden.reference import reference
from nmflow.golden.train import TrainConfig, load_checkpoint, save_checkpoint, train


def conv_model(seed=0, kind="ternary", input_bits=5):
    """A random two-convolution model on 2 x 7 x 6 images: c5k3p1 with pooling 2 (7 x 6 ->
    3 x 3), c4k2 (3 x 3 -> 2 x 2), f6, f3; thresholds drawn around the pre-activations."""
    rng = np.random.default_rng(seed)
    values = [-1, 1] if kind == "binary" else [-1, 0, 1]

    def weights(n_out, n_in):
        return rng.choice(values, size=(n_out, n_in)).astype(np.int8)

    def thresholds(n, spread):
        t_hi = rng.integers(-spread, spread + 1, n)
        return t_hi, t_hi - rng.integers(0, spread + 1, n)

    t0, l0 = thresholds(5, 20)
    t1, l1 = thresholds(4, 6)
    t2, l2 = thresholds(6, 4)
    ternary = kind == "ternary"
    act = "ternary" if ternary else "sign"
    layers = [
        Layer(weights(5, 9 * 2), act, t_hi=t0, t_lo=l0 if ternary else None,
              conv={"in_shape": [2, 7, 6], "kernel": 3, "padding": 1, "pool": 2}),
        Layer(weights(4, 4 * 5), act, t_hi=t1, t_lo=l1 if ternary else None,
              conv={"in_shape": [5, 3, 3], "kernel": 2, "padding": 0, "pool": 1}),
        Layer(weights(6, 16), act, t_hi=t2, t_lo=l2 if ternary else None),
        Layer(weights(3, 6), "none", scale=rng.integers(1, 50, 3), offset=rng.integers(-99, 99, 3)),
    ]
    return HardwareModel(input_bits=input_bits, weight_kind=kind, layers=layers)


def torch_twin(model, x):
    """The same network by another road: torch's conv2d in float64 on the weights put back
    into [out, in, kernel, kernel], max_pool2d, and flatten, channel by channel."""
    h = torch.as_tensor(x, dtype=torch.float64)
    acts = []
    for index, layer in enumerate(model.layers):
        w = torch.as_tensor(layer.weights, dtype=torch.float64)
        if layer.conv is not None:
            c, hh, ww = layer.conv["in_shape"]
            k = layer.conv["kernel"]
            if index == 0:
                h = h.reshape(len(h), c, hh, ww)
            a = torch.nn.functional.conv2d(h, w.reshape(len(w), k, k, c).permute(0, 3, 1, 2),
                                           padding=layer.conv["padding"])
            t_hi = torch.as_tensor(layer.t_hi, dtype=torch.float64)[None, :, None, None]
            t_lo = None if layer.t_lo is None else \
                torch.as_tensor(layer.t_lo, dtype=torch.float64)[None, :, None, None]
        else:
            if h.dim() == 4:                     # the map, pixel by pixel, channels innermost
                h = h.permute(0, 2, 3, 1).flatten(1)
            a = h @ w.T
            if layer.activation == "none":
                scores = a.long() * torch.as_tensor(layer.scale) + torch.as_tensor(layer.offset)
                return acts, scores.numpy()
            t_hi = torch.as_tensor(layer.t_hi, dtype=torch.float64)
            t_lo = None if layer.t_lo is None else torch.as_tensor(layer.t_lo, dtype=torch.float64)
        up = (a >= t_hi).double()
        h = up * 2 - 1 if t_lo is None else up - (a < t_lo).double()
        if layer.conv is not None and layer.conv["pool"] > 1:
            h = torch.nn.functional.max_pool2d(h, layer.conv["pool"])
        acts.append(h.permute(0, 2, 3, 1).flatten(1) if h.dim() == 4 else h)
    raise AssertionError


@pytest.mark.parametrize("kind", ["ternary", "binary"])
def test_reference_equals_an_independent_convolution(kind):
    model = conv_model(seed=3, kind=kind)
    assert model.n_inputs == 84 and model.sizes == [84, 5, 4, 6, 3]
    x = np.random.default_rng(1).integers(0, 32, (200, 84))
    trace = reference(model, x)
    acts, scores = torch_twin(model, x)
    assert len(trace.acts) == 3
    for ours, theirs in zip(trace.acts, acts):
        assert ours.shape == tuple(theirs.shape)
        assert (ours == theirs.numpy().astype(np.int8)).all()
        assert len(np.unique(ours)) > 1
    assert (trace.scores == scores).all()
    # the pre-activations of a convolution are its map before pooling: 7 x 6 x 5
    assert trace.preacts[0].shape == (200, 7 * 6 * 5)


def test_reference_pads_with_zero_and_pools_the_activations():
    # One channel, a 1 x 1 kernel of +1 with padding 0 is the identity on the pixels; a 2 x 2
    # kernel of +1 with padding 1 on a 2 x 2 image sums the pixels it covers.
    layers = [Layer(np.ones((1, 4), np.int8), "ternary", t_hi=np.array([3]), t_lo=np.array([1]),
                    conv={"in_shape": [1, 2, 2], "kernel": 2, "padding": 1, "pool": 3}),
              Layer(np.ones((2, 1), np.int8), "none", scale=np.array([1, 2]),
                    offset=np.array([0, 0]))]
    model = HardwareModel(input_bits=2, weight_kind="ternary", layers=layers)
    trace = reference(model, [[1, 0, 2, 0]])              # image rows [1, 0], [2, 0]
    # the 3 x 3 map of window sums: corners 1, 0, 0, 2; edges 1, 3, 0, 2; ... before pooling
    assert trace.preacts[0].reshape(3, 3).tolist() == [[1, 1, 0], [3, 3, 0], [2, 2, 0]]
    # activations (>= 3: +1, < 1: -1, else 0), then the maximum over the 3 x 3 window
    assert trace.acts[0].tolist() == [[1]]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module", params=["tnn", "bnn"])
def trained(request, digits):
    make = TrainConfig.tnn if request.param == "tnn" else TrainConfig.bnn
    config = make(arch="c8k3p1-p2-c16k3-f32-f10", epochs=15, seed=1)
    net, history = train(config, digits)
    return request.param, config, net, history


def test_a_conv_network_trains_on_digits(trained, digits):
    kind, config, net, history = trained
    assert net.sizes == [64, 8, 16, 32, 10]
    assert history.test_accuracy[-1] > 0.8


def test_export_gives_every_activation_of_the_float_model(trained, digits, tmp_path):
    kind, config, net, _ = trained
    model = export(net, digits.input_bits)
    assert model.has_conv and model.layers[0].conv == {"in_shape": [1, 8, 8], "kernel": 3,
                                                       "padding": 1, "pool": 2}
    assert model.layers[1].conv["in_shape"] == [8, 4, 4] and model.layers[2].conv is None
    acts, logits = net.trace(digits.x_test)
    trace = reference(model, digits.x_test)
    for ours, theirs in zip(trace.acts, acts):
        assert (ours == theirs.numpy().astype(np.int8)).all()
    assert (trace.classes == logits.argmax(1).numpy()).mean() >= 0.99
    # written as version 3, read back equal
    hwmodel.save(model, tmp_path / "m")
    header = json.loads((tmp_path / "m.json").read_text())
    assert header["version"] == 3 and header["layers"][0]["conv"]["kernel"] == 3
    back = hwmodel.load(tmp_path / "m")
    assert [layer.conv for layer in back.layers] == [layer.conv for layer in model.layers]
    assert (reference(back, digits.x_test).scores == trace.scores).all()
    # the checkpoint rebuilds the same network
    save_checkpoint(tmp_path / "model.pt", net, config, {}, _history(), digits.info())
    again = load_checkpoint(tmp_path / "model.pt").net
    assert torch.equal(again.trace(digits.x_test)[1], logits)


def _history():
    from nmflow.golden.train import History
    return History()


@pytest.mark.parametrize("change, renew, message", [
    (lambda h: h["layers"][0]["conv"].update(kernel=2), False, "checksum mismatch"),
    (lambda h: h["layers"][0]["conv"].update(pool=1), False, "checksum mismatch"),
    (lambda h: h.update(version=2), False, "checksum mismatch"),
    # with the checksum renewed, the rules still hold
    (lambda h: h.update(version=2), True, r"hardware model layer 0 is a convolution, which "
                                          r"version 2 does not have \(version 3 does\)"),
    (lambda h: h["layers"][1]["conv"].update(pool=2), True,
     r"layer 2 weights must have 4 inputs \(the previous layer's outputs\), not 16"),
    (lambda h: h["layers"][1]["conv"].update(pool=3), True, "layer 1 conv map must not vanish"),
])
def test_the_geometry_is_covered(tmp_path, change, renew, message):
    hwmodel.save(conv_model(), tmp_path / "m")
    header = json.loads((tmp_path / "m.json").read_text())
    change(header)
    if renew:
        with np.load(tmp_path / "m.npz") as npz:
            header["sha256"] = hwmodel.checksum(header, {name: npz[name] for name in npz.files})
    (tmp_path / "m.json").write_text(json.dumps(header))
    with pytest.raises(NmflowError, match=message):
        hwmodel.load(tmp_path / "m")


def _with(model, index, **changes):
    layers = list(model.layers)
    old = layers[index]
    fields = {"weights": old.weights, "activation": old.activation, "t_hi": old.t_hi,
              "t_lo": old.t_lo, "scale": old.scale, "offset": old.offset, "conv": old.conv}
    fields.update(changes)
    layers[index] = Layer(**fields)
    return HardwareModel(input_bits=model.input_bits, weight_kind=model.weight_kind,
                         layers=layers)


@pytest.mark.parametrize("index, changes, message", [
    (0, {"conv": {"in_shape": [2, 7, 6], "kernel": 3, "padding": 1}},
     "layer 0 conv must be a dict of in_shape, kernel, padding, pool, not"),
    (0, {"conv": {"in_shape": [2, 7], "kernel": 3, "padding": 1, "pool": 2}},
     r"layer 0 conv in_shape must be \[channels, height, width\] of positive integers"),
    (0, {"conv": {"in_shape": [2, 7, 6], "kernel": 12, "padding": 1, "pool": 2}},
     "layer 0 conv kernel must be an integer from 1 to 11, not 12"),
    (0, {"conv": {"in_shape": [2, 7, 6], "kernel": 3, "padding": 3, "pool": 2}},
     "layer 0 conv padding must be an integer from 0 to kernel - 1 = 2, not 3"),
    (0, {"conv": {"in_shape": [3, 7, 6], "kernel": 3, "padding": 1, "pool": 2}},
     "layer 0 weights must have kernel \\* kernel \\* channels = 27 inputs, not 18"),
    (1, {"conv": {"in_shape": [5, 4, 3], "kernel": 2, "padding": 0, "pool": 1}},
     r"layer 1 conv in_shape must be \[5, 3, 3\] \(the map the previous layer hands on\), "
     r"not \[5, 4, 3\]"),
    (1, {"conv": {"in_shape": [5, 3, 3], "kernel": 2, "padding": 0, "pool": 4}},
     "layer 1 conv map must not vanish"),
    (2, {"weights": np.ones((6, 15), np.int8)},
     "layer 2 weights must have 16 inputs \\(the previous layer's outputs\\), not 15"),
    (3, {"conv": {"in_shape": [6, 1, 1], "kernel": 1, "padding": 0, "pool": 1}},
     "layer 3 must be fully connected \\(the last layer gives scores\\), not a convolution"),
])
def test_bad_geometry_is_one_line(index, changes, message):
    with pytest.raises(NmflowError, match=f"^{message}"):
        _with(conv_model(), index, **changes)


def test_the_qonnx_export_refuses_a_convolution():
    from nmflow.golden.qonnx import to_qonnx
    with pytest.raises(NmflowError, match="^format qonnx takes fully connected models only"):
        to_qonnx(conv_model())


def test_the_read_order_of_a_convolution():
    """c2k3p1-p2-f3 on a 1 x 4 x 4 map, 4 lanes, pe 2, counted by hand: the 2 x 2 pooled
    pixels, each with its one group of two channels read at the four positions of its pooling
    window (rows 0 to 8 each time), then the dense layer's rows once."""
    from nmflow.golden.plan import EnginePlan
    from nmflow.golden.reference import read_order
    from nmflow.golden.synthetic import random_conv_model
    model = random_conv_model("c2k3p1-p2-f3", (1, 4, 4), seed=1)
    plan = EnginePlan(model, 4, pe=2)
    window = list(range(9))
    # the dense layer reads 4 pixels x 1 chunk of 2 channels, 2 groups of 2 classes
    assert read_order(plan).tolist() == window * 16 + list(range(9, 17))


def test_a_read_that_draws_per_read_follows_the_engines_order():
    from nmflow.golden.injector import ErrorInjection, InjectedRead
    from nmflow.golden.readerrors import ErrorRates
    model, x = conv_model(), np.random.default_rng(0).integers(0, 32, (3, 84))
    ideal = reference(model, x, lanes=8)
    none = InjectedRead(ErrorInjection(ErrorRates(0.0, 0.0, 0.0), mode="per_read"), 8)
    assert reference(model, x, lanes=8, read=none).scores.tolist() == ideal.scores.tolist()
    rates = ErrorRates(0.2, 0.2, 0.2)
    same = np.repeat(x[:1], 3, axis=0)
    # static: every inference draws the same sequence; per read: each its own
    static = reference(model, same, lanes=8,
                       read=InjectedRead(ErrorInjection(rates, mode="static"), 8))
    assert (static.preacts[0] == static.preacts[0][:1]).all()
    fresh = reference(model, same, lanes=8,
                      read=InjectedRead(ErrorInjection(rates, mode="per_read"), 8))
    assert (fresh.preacts[0] != fresh.preacts[0][:1]).any()


def test_arch_and_dataset_must_agree(digits):
    with pytest.raises(NmflowError, match=r"^arch 'c4k3-f7' must end with f10 \(one neuron per "
                                          r"class of the dataset\), not f7$"):
        train(TrainConfig.tnn(arch="c4k3-f7", epochs=1), digits)
    with pytest.raises(NmflowError, match="^arch layer 'c4k9': a 9 x 9 kernel with padding 0 "
                                          "must fit the 8 x 8 map it reads$"):
        train(TrainConfig.tnn(arch="c4k9-f10", epochs=1), digits)
    with pytest.raises(NmflowError, match="^arch layer 'q3'"):
        TrainConfig.tnn(arch="q3-f10")


def test_a_float_conv_net_checks_its_geometry():
    with pytest.raises(NmflowError, match=r"^in_shape must be \(channels, height, width\)"):
        QuantNet(arch="c4k3-f10", in_shape=(8, 8))
    with pytest.raises(NmflowError, match=r"^sizes must be \[64, 4, 10\] for arch 'c4k3-f10'"):
        QuantNet([64, 5, 10], arch="c4k3-f10", in_shape=(1, 8, 8))


def test_the_command_line_trains_and_exports_a_conv_network(capsys, tmp_path):
    from helpers import error_line
    from nmflow.scripts.cli import main
    run = str(tmp_path / "run")
    assert main(["train", "--arch", "c4k3p1-p2-f10", "--epochs", "3", "--run", run]) == 0
    assert main(["export", "--run", run]) == 0
    golden = json.loads((tmp_path / "run" / "golden.json").read_text())
    assert golden["sizes"] == [64, 4, 10] and golden["agreement"] == 1.0
    model = hwmodel.load(tmp_path / "run" / "hwmodel")
    assert model.layers[0].conv == {"in_shape": [1, 8, 8], "kernel": 3, "padding": 1, "pool": 2}
    # the engine computes it: Verilog, and a cocotb run with every activation map compared
    assert main(["verilog", "--run", run]) == 0
    assert main(["sim", "--run", run, "--limit", "6"]) == 0
    summary = json.loads((tmp_path / "run" / "sim" / "summary.json").read_text())
    assert summary["passed"] and summary["images"] == 6
    capsys.readouterr()
    assert error_line(capsys, ["train", "--arch", "c4k3-f10", "--hidden", "8", "--run", run]) == \
        "nmflow: error: --hidden and --arch name the layers twice: give one of them"
    assert error_line(capsys, ["train", "--arch", "c4k3-p2", "--run", run]) == (
        "nmflow: error: arch must end with a fully connected layer of one neuron per class "
        "(f<classes>), not 'p2'")
