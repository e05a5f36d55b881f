"""Export: BatchNorm folded into integer thresholds and scores, checked against the float model.

Hand-made networks use dyadic BatchNorm parameters with ``eps = 0``, so the float model computes
its outputs exactly and every tie (``y == 0`` for sign, ``|y| == act_threshold`` for ternary) is a
real tie; the expected activations are derived here from the BatchNorm formula and the rules at
zero, not from the code under test.
"""

import io
import itertools
import json

import numpy as np
import pytest
import torch

from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.golden.datasets import load_digits
from nmflow.golden.export import export, training_meta
from nmflow.golden.layers import QuantNet
from nmflow.golden.reference import reference
from nmflow.golden.train import TrainConfig, evaluate, train

torch.set_num_threads(1)


def set_layer(net, index, weights, gamma, beta, mean, var, eps=0.0):
    """Set quantized weights (hidden value 0.5 * w quantizes to w) and BatchNorm by hand."""
    with torch.no_grad():
        net.linears[index].weight.copy_(0.5 * torch.tensor(weights, dtype=torch.float32))
        norm = net.norms[index]
        norm.eps = eps
        norm.weight.copy_(torch.tensor(gamma, dtype=torch.float32))
        norm.bias.copy_(torch.tensor(beta, dtype=torch.float32))
        norm.running_mean.copy_(torch.tensor(mean, dtype=torch.float32))
        norm.running_var.copy_(torch.tensor(var, dtype=torch.float32))


# Hidden neurons: (weight row, gamma, beta, mean, var), on 3 inputs of 2 bits (a from -6 to 9).
HIDDEN = [
    ([1, 1, 1], 1.0, 0.0, 4.0, 1.0),      # y = a - 4: sign tie at a = 4, ternary ties at 3.5/4.5
    ([1, -1, 0], -0.5, 0.0, 1.0, 1.0),    # negative gamma: y = -(a - 1) / 2, ties at a = 0, 1, 2
    ([1, 1, 1], 0.0, 0.7, 0.0, 1.0),      # gamma == 0: constant +1 / +1
    ([1, 1, 1], 0.0, -0.2, 0.0, 1.0),     # gamma == 0: constant -1 / 0
    ([1, 1, 1], 0.0, -0.6, 0.0, 1.0),     # gamma == 0: constant -1 / -1
    ([0, 1, 1], 0.0, 0.0, 3.0, 1.0),      # gamma == 0, beta == 0: +1 (sign rule at 0) / 0
    ([1, 0, -1], -2.0, 1.0, 0.0, 4.0),    # sigma = 2: y = 1 - a
    ([1, 1, 0], 0.25, -0.5, 2.0, 1.0),    # y = (a - 2) / 4 - 1/2: ties at a = 2, 4, 6
    ([-1, -1, -1], 0.5, 0.5, -5.0, 0.25),  # y = a + 5.5, never 0, crosses -0.5 between -7, -6
]
# Last layer: 3 classes. gain |gamma| / sigma = 2, 1/2, 1 (F = 13 since 2 * 2**14 = 2**15).
LAST = dict(weights=[[1, 0, -1, 1, 0, 1, 1, -1, 0], [0, 1, 1, -1, 1, 0, -1, 1, 1],
                     [1, 1, 0, 0, -1, 1, 0, 1, -1]],
            gamma=[2.0, -1.0, 0.5], beta=[0.25, -1.0, 3.0], mean=[1.0, -2.0, 0.0],
            var=[1.0, 4.0, 0.25])


def hand_net(activation):
    net = QuantNet([3, len(HIDDEN), 3], weight_kind="ternary", activation=activation)
    rows, gamma, beta, mean, var = (list(v) for v in zip(*HIDDEN))
    set_layer(net, 0, rows, gamma, beta, mean, var)
    set_layer(net, 1, **LAST)
    net.eval()
    return net


ALL_INPUTS = np.array(list(itertools.product(range(4), repeat=3)), dtype=np.int64)  # 2-bit inputs


def expected_hidden(activation):
    """The hidden activations by the BatchNorm formula and the contract's rules (float64, exact
    for these dyadic parameters)."""
    rows, gamma, beta, mean, var = (np.array(v, dtype=np.float64) for v in zip(*HIDDEN))
    a = ALL_INPUTS @ rows.T
    y = gamma * (a - mean) / np.sqrt(var) + beta
    if activation == "sign":
        return np.where(y >= 0, 1, -1)
    return np.where(y > 0.5, 1, np.where(y < -0.5, -1, 0))


@pytest.mark.parametrize("activation", ["sign", "ternary"])
def test_hand_made_batchnorm_folds_exactly_at_every_tie(activation):
    net = hand_net(activation)
    want = expected_hidden(activation)
    # the boundary pre-activations are all reached by the enumerated inputs
    a = ALL_INPUTS @ np.array([row for row, *_ in HIDDEN]).T
    assert {4, 3, 5} <= set(a[:, 0]) and {0, 1, 2} <= set(a[:, 1]) and {2, 4, 6} <= set(a[:, 7])
    acts, _ = net.trace(ALL_INPUTS)
    np.testing.assert_array_equal(acts[0].numpy(), want)  # the float model follows the rules
    model = export(net, input_bits=2)
    trace = reference(model, ALL_INPUTS)
    np.testing.assert_array_equal(trace.acts[0], want)
    # negative gamma negates the stored row; the others are stored as trained
    signs = np.array([-1 if g < 0 else 1 for _, g, *_ in HIDDEN])
    np.testing.assert_array_equal(model.layers[0].weights,
                                  signs[:, None] * np.array([row for row, *_ in HIDDEN]))
    assert model.layers[0].t_hi.dtype == np.int64
    bound = model.preact_bound(0)
    assert bound == 9
    assert np.all(np.abs(model.layers[0].t_hi) <= bound + 1)
    if activation == "ternary":
        assert np.all(model.layers[0].t_lo <= model.layers[0].t_hi)
        assert np.all(np.abs(model.layers[0].t_lo) <= bound + 1)
    else:
        assert model.layers[0].t_lo is None


@pytest.mark.parametrize("activation", ["sign", "ternary"])
def test_hand_made_last_layer_scores(activation):
    net = hand_net(activation)
    model = export(net, input_bits=2)
    last = model.layers[-1]
    assert model.score_frac_bits == 13
    np.testing.assert_array_equal(last.scale, [2 * 2 ** 13, 2 ** 13 // 2, 2 ** 13])
    # offset = (beta - gamma * mean / sigma) * 2**13 = -1.75, -2, 3 times 8192
    np.testing.assert_array_equal(last.offset, [-14336, -16384, 24576])
    np.testing.assert_array_equal(last.weights, np.array(LAST["weights"]) * [[1], [-1], [1]])
    trace = reference(model, ALL_INPUTS)
    _, logits = net.trace(ALL_INPUTS)
    # every parameter is dyadic: the scores are the float logits times 2**13, exactly
    np.testing.assert_array_equal(trace.scores, logits.double().numpy() * 2 ** 13)
    np.testing.assert_array_equal(trace.classes, logits.argmax(dim=1).numpy())


def single_layer_net(gamma, beta):
    net = QuantNet([2, len(gamma)], weight_kind="binary", activation="sign")
    set_layer(net, 0, [[1, -1]] * len(gamma), gamma, beta, [0.0] * len(gamma), [1.0] * len(gamma))
    return net


def test_score_frac_bits_guard_a_scale_that_rounds_onto_the_limit():
    gain = (2 ** 15 - 0.4) / 2 ** 14           # times 2**14 is 32767.6, which rounds to 2**15
    assert round(float(np.float32(gain)) * 2 ** 14) == 2 ** 15
    model = export(single_layer_net([gain, 1.0], [0.0, 0.0]), input_bits=1)
    assert model.score_frac_bits == 13
    assert model.layers[0].scale[0] == 2 ** 14  # 16383.8 rounded


def test_score_frac_bits_limited_by_the_offset():
    # scale 2**-6 allows F = 20; offset 3000 * 2**F < 2**31 allows F = 19 only
    model = export(single_layer_net([2.0 ** -6], [3000.0]), input_bits=1)
    assert model.score_frac_bits == 19
    assert model.layers[0].offset[0] == 3000 * 2 ** 19 < 2 ** 31


@pytest.mark.parametrize("activation", ["sign", "ternary"])
def test_thresholds_follow_the_float32_model_where_float64_rounding_differs(activation):
    """Thresholds placed within float rounding of an integer pre-activation: the float model's
    float32 arithmetic and exact float64 disagree there, the export must follow the float model."""
    rng = np.random.default_rng(7)
    n = 512
    net = QuantNet([1, n, 2], weight_kind="ternary", activation=activation)
    k = rng.integers(10, 246, n).astype(np.float64)             # the integer a at the tie
    gamma = rng.uniform(0.3, 3.0, n) * rng.choice([-1, 1], n)
    var = rng.uniform(0.1, 10.0, n)
    mean = rng.uniform(0, 255, n)
    eps = 1e-5
    sigma = np.sqrt(var.astype(np.float32).astype(np.float64) + np.float32(eps))
    target = 0.0 if activation == "sign" else 0.5 * rng.choice([-1, 1], n)
    beta = target - gamma * (k - mean) / sigma                 # y(k) = target, up to rounding
    set_layer(net, 0, [[1]] * n, gamma, beta, mean, var, eps=eps)
    set_layer(net, 1, [[1] * n, [-1] * n], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0])
    net.eval()
    x = np.arange(256, dtype=np.int64)[:, None]                 # every legal 8-bit input, a = x
    acts, _ = net.trace(x)
    float_model = acts[0].numpy()
    # exact arithmetic on the stored float32 parameters decides differently somewhere
    p = {name: getattr(net.norms[0], attr).detach().double().numpy()
         for name, attr in (("g", "weight"), ("b", "bias"), ("m", "running_mean"),
                            ("v", "running_var"))}
    y64 = p["g"] * (x - p["m"]) / np.sqrt(p["v"] + eps) + p["b"]
    exact = np.where(y64 >= 0, 1, -1) if activation == "sign" else \
        np.where(y64 > 0.5, 1, np.where(y64 < -0.5, -1, 0))
    assert (exact != float_model).any(), "the test must contain float rounding disagreements"
    model = export(net, input_bits=8)
    np.testing.assert_array_equal(reference(model, x).acts[0], float_model)


# ------------------------------------------------------------------------- trained on digits

@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module", params=["tnn", "bnn"])
def trained(request, digits):
    config = TrainConfig.tnn() if request.param == "tnn" else TrainConfig.bnn()
    net, history = train(config, digits)
    model = export(net, digits.input_bits, training_meta(net, digits, config, history))
    return request.param, config, net, model


@pytest.mark.slow
def test_integer_model_matches_the_float_model_on_digits(trained, digits):
    kind, _, net, model = trained
    acts, logits = net.trace(digits.x_test)
    float_classes = logits.argmax(dim=1).numpy()
    trace = reference(model, digits.x_test)
    n = len(digits.y_test)
    assert (trace.classes == float_classes).sum() >= 0.995 * n
    for float_act, int_act in zip(acts, trace.acts):
        differ = (float_act.numpy() != int_act).any(axis=1).sum()
        assert differ <= 0.005 * n  # nearly all images: the whole layer identical
    float_accuracy = (float_classes == digits.y_test).mean()
    int_accuracy = (trace.classes == digits.y_test).mean()
    assert abs(float_accuracy - int_accuracy) <= 0.003
    assert int_accuracy >= {"tnn": 0.965, "bnn": 0.95}[kind]


@pytest.mark.slow
def test_exported_weights_and_thresholds(trained):
    kind, _, net, model = trained
    assert model.weight_kind == ("ternary" if kind == "tnn" else "binary")
    assert [layer.activation for layer in model.layers] == \
        [("ternary" if kind == "tnn" else "sign")] * 2 + ["none"]
    for index, (wq, norm, layer) in enumerate(zip(net.quantized_weights(), net.norms,
                                                  model.layers)):
        sign = np.where(norm.weight.detach().numpy() < 0, -1, 1)
        assert layer.weights.dtype == np.int8
        np.testing.assert_array_equal(layer.weights, sign[:, None] * wq.numpy())
    assert np.all(model.layers[-1].scale >= 0)
    assert np.all(model.layers[-1].scale < 2 ** 15)


@pytest.mark.slow
def test_meta_records_the_training_provenance(trained, digits):
    kind, config, net, model = trained
    meta = model.meta
    assert meta["dataset"]["name"] == "digits" and meta["dataset"]["test"] == 360
    assert meta["float_accuracy"] == evaluate(net, digits.x_test, digits.y_test)
    assert meta["sizes"] == [64, 128, 128, 10]
    assert (meta["weight_kind"], meta["activation"]) == (config.weight_kind, config.activation)
    assert meta["seed"] == config.seed == 0
    assert meta["export"]["score_frac_bits"] == model.score_frac_bits
    json.dumps(meta)


@pytest.mark.slow
def test_export_save_load_round_trip(trained, digits, tmp_path):
    _, _, _, model = trained
    npz, header = hwmodel.save(model, tmp_path / "hwmodel")
    loaded = hwmodel.load(tmp_path / "hwmodel.json")
    assert loaded.meta == model.meta
    assert (loaded.input_bits, loaded.weight_kind, loaded.score_frac_bits) == \
        (model.input_bits, model.weight_kind, model.score_frac_bits)
    for name, value in model.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], value)
        assert loaded.arrays()[name].dtype == value.dtype
    a, b = reference(model, digits.x_test), reference(loaded, digits.x_test)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_export_leaves_the_training_mode_alone():
    net = hand_net("sign")
    net.train()
    export(net, input_bits=2)
    assert net.training


def test_export_refuses_bad_arguments():
    net = hand_net("ternary")
    with pytest.raises(NmflowError, match=r"^net must be a QuantNet, not Linear$"):
        export(torch.nn.Linear(3, 3), input_bits=2)
    with pytest.raises(NmflowError, match=r"^input_bits must be an integer from 1 to 8, "
                                          r"not 9$"):
        export(net, input_bits=9)
    with pytest.raises(NmflowError, match=r"^meta must be JSON-serialisable, not \(.*set.*\)$"):
        export(net, input_bits=2, meta={"tags": {"a"}})
    with torch.no_grad():
        net.norms[0].running_var[2] = float("nan")
    with pytest.raises(NmflowError, match=r"^layer 0 BatchNorm running_var must be finite, "
                                          r"not nan at neuron 2$"):
        export(net, input_bits=2)


# ------------------------------------------------------------------- hwmodel.load error paths

@pytest.fixture
def saved(tmp_path):
    model = export(hand_net("ternary"), input_bits=2, meta={"note": "hand-made"})
    npz, header = hwmodel.save(model, tmp_path / "m")
    return npz, header


def rewrite(npz, header, change_arrays=None, change_header=None, rehash=True):
    """Rewrite a saved model: arrays and header changed by the callbacks, checksum renewed."""
    with np.load(npz) as data:
        arrays = {name: data[name].copy() for name in data.files}
    if change_arrays:
        change_arrays(arrays)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        npz.write_bytes(buffer.getvalue())
    head = json.loads(header.read_text())
    if change_header:
        change_header(head)
    if rehash:
        head["sha256"] = hwmodel.checksum(head, arrays)
    header.write_text(json.dumps(head))


def load_error(header):
    with pytest.raises(NmflowError) as error:
        hwmodel.load(header)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_load_round_trip_of_the_hand_made_model(saved):
    model = hwmodel.load(saved[1])
    assert model.meta["note"] == "hand-made"
    np.testing.assert_array_equal(reference(model, ALL_INPUTS).acts[0], expected_hidden("ternary"))


def test_load_refuses_truncated_npz(saved):
    npz, header = saved
    npz.write_bytes(npz.read_bytes()[:100])
    message = load_error(header)
    assert message.startswith(f"hardware model arrays {str(npz)!r} are unreadable "
                              f"(truncated or not an npz file")


def test_load_refuses_tampered_array(saved):
    npz, header = saved
    rewrite(npz, header, change_arrays=lambda a: a["t_hi0"].__setitem__(0, a["t_hi0"][0] + 1),
            rehash=False)
    assert load_error(header) == (f"hardware model checksum mismatch: {str(npz)!r} does not match "
                                  f"the sha256 in {str(header)!r} (file changed or tampered)")


def test_load_refuses_foreign_schema(saved):
    npz, header = saved
    rewrite(npz, header, change_header=lambda h: h.__setitem__("schema", "finn.model"))
    assert load_error(header) == (f"hardware model header {str(header)!r} must have schema "
                                  f"'nmflow.hwmodel', not 'finn.model'")


def test_load_refuses_wrong_version(saved):
    npz, header = saved
    rewrite(npz, header, change_header=lambda h: h.__setitem__("version", 1))
    assert load_error(header) == (f"hardware model version must be 2 or 3, not 1 "
                                  f"(in {str(header)!r})")


@pytest.mark.parametrize("field, value", [
    ("input_bits", 5), ("score_bits", 40), ("sizes", [4, 3, 2]), ("score_frac_bits", 3),
    ("weight_kind", "binary"),
])
def test_header_fields_are_under_the_checksum(saved, field, value):
    # A field the hardware is built from, changed without renewing the checksum, is tampering.
    npz, header = saved
    rewrite(npz, header, change_header=lambda h: h.__setitem__(field, value), rehash=False)
    assert load_error(header) == (f"hardware model checksum mismatch: {str(npz)!r} does not match "
                                  f"the sha256 in {str(header)!r} (file changed or tampered)")


def test_header_sizes_and_score_bits_must_match_the_arrays(saved):
    # Even with the checksum renewed, a header that disagrees with its arrays is refused.
    npz, header = saved
    model = hwmodel.load(header)
    rewrite(npz, header, change_header=lambda h: h.__setitem__("score_bits", model.score_bits + 1))
    assert load_error(header) == (f"hardware model header score_bits must be {model.score_bits} "
                                  f"(what the arrays give), not {model.score_bits + 1}")


def test_meta_must_be_an_object(saved):
    npz, header = saved
    rewrite(npz, header, change_header=lambda h: h.__setitem__("meta", [1, 2]))
    assert load_error(header) == "hardware model header meta must be an object, not list"


def test_deeply_nested_header_refused(saved):
    npz, header = saved
    header.write_text("[" * 100000 + "]" * 100000)
    assert load_error(header) == (f"hardware model header {str(header)!r} is nested too deeply "
                                  f"to be a header")


def test_load_refuses_weight_out_of_range(saved):
    npz, header = saved
    rewrite(npz, header, change_arrays=lambda a: a["w1"].__setitem__((2, 4), 2))
    assert load_error(header) == "layer 1 weights of a ternary model must be in {-1, +0, +1}, not 2"


def test_load_refuses_binary_model_with_zero_weight(saved):
    npz, header = saved
    rewrite(npz, header, change_header=lambda h: h.__setitem__("weight_kind", "binary"))
    assert load_error(header) == "layer 0 weights of a binary model must be in {-1, +1}, not 0"


def test_load_refuses_inverted_thresholds(saved):
    npz, header = saved

    def invert(arrays):
        arrays["t_lo0"][1] = arrays["t_hi0"][1] + 1

    rewrite(npz, header, change_arrays=invert)
    model_arrays = np.load(npz)
    t_lo, t_hi = int(model_arrays["t_lo0"][1]), int(model_arrays["t_hi0"][1])
    assert load_error(header) == (f"layer 0 thresholds must satisfy t_lo <= t_hi, "
                                  f"not t_lo={t_lo} > t_hi={t_hi} at neuron 1")


def test_load_refuses_threshold_beyond_the_bound(saved):
    npz, header = saved
    rewrite(npz, header, change_arrays=lambda a: a["t_hi0"].__setitem__(0, 11))
    assert load_error(header) == ("layer 0 t_hi must lie within +-10 (the pre-activation bound "
                                  "plus one), not 11")
