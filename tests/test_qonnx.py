"""``nmflow import``: QONNX graphs (hand-made with onnx.helper, and Brevitas's own export of
networks the tests train) into hardware models equal to the graph's execution by qonnx."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from helpers import one_torch_thread  # noqa: F401  (autouse)
from nmflow.errors import NmflowError
from nmflow.golden.qonnx import check_import, execute, import_qonnx, quantize_inputs
from nmflow.golden.reference import reference

QONNX = "qonnx.custom_op.general"


def nmflow(*args):
    return subprocess.run([sys.executable, "-m", "nmflow.scripts.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=1800)


# -- hand-made graphs ---------------------------------------------------------------------------

class GraphMaker:
    """Builds a QONNX graph node by node along one path."""

    def __init__(self, n_in, domain=QONNX):
        self.nodes, self.inits, self.domain = [], [], domain
        self.data = "x"
        self.n_in = n_in
        self.count = 0

    def const(self, value, dtype=np.float32):
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, domain="", **attrs):
        self.count += 1
        out = f"v{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.count}",
                                           domain=domain, **attrs))
        return out

    def step(self, op, *consts, domain="", data_first=True, **attrs):
        names = [self.const(c) for c in consts]
        inputs = [self.data, *names] if data_first else [*names, self.data]
        self.data = self.node(op, inputs, domain, **attrs)
        return self

    def quant(self, scale, bits, signed, narrow, rounding="ROUND"):
        return self.step("Quant", scale, 0.0, float(bits), domain=self.domain, signed=signed,
                         narrow=narrow, rounding_mode=rounding)

    def bipolar(self, scale):
        return self.step("BipolarQuant", scale, domain=self.domain)

    def dense(self, raw, scale, kind="ternary", op="Gemm", bias=None):
        """A layer's product: ``raw`` [out, in] float weights through the weight quantizer."""
        w = raw if op == "Gemm" else raw.T
        name = self.const(w)
        if kind == "bipolar":
            q = self.node("BipolarQuant", [name, self.const(scale)], self.domain)
        elif kind == "ternary":
            q = self.node("Quant", [name, self.const(scale), self.const(0.0), self.const(2.0)],
                          self.domain, signed=1, narrow=1, rounding_mode="ROUND")
        else:                                   # constants already in {-1, 0, +1}
            q = name
        inputs = [self.data, q] + ([self.const(bias)] if bias is not None else [])
        attrs = {"transB": 1} if op == "Gemm" else {}
        self.data = self.node(op, inputs, **attrs)
        return self

    def batchnorm(self, gamma, beta, mean, var, eps=1e-5):
        return self.step("BatchNormalization", gamma, beta, mean, var, epsilon=eps)

    def model(self, input_shape=None):
        shape = input_shape or [1, self.n_in]
        graph = helper.make_graph(
            self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(self.data, TensorProto.FLOAT, None)], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                       helper.make_opsetid(self.domain, 1)])


def random_net(seed, sizes=(12, 9, 7, 5), activation="ternary", weights="ternary", op="Gemm",
               po2=True, domain=QONNX, last_bn=True, input_bits=4, image=False):
    """A random network of the kinds the importer takes, and its raw test inputs (``image``:
    a [1, 1, 3, 4] input flattened first)."""
    rng = np.random.default_rng(seed)
    g = GraphMaker(sizes[0], domain)
    if image:
        g.data = g.node("Flatten", ["x"], axis=1)
    in_scale = 0.5 if po2 else 0.37
    g.quant(in_scale, input_bits, 0, 0)
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        raw = rng.normal(size=(n_out, n_in)).astype(np.float32)
        if weights == "ternary":
            w_scale = (np.float32(0.25) if po2 else
                       rng.uniform(0.2, 0.6, (n_out, 1)).astype(np.float32))
            raw = raw * 0.3                       # some weights round to 0
        elif weights == "bipolar":
            w_scale = np.float32(1.0) if po2 else np.float32(0.3)
        else:
            raw = rng.integers(-1, 2, (n_out, n_in)).astype(np.float32)
            w_scale = None
        bias = rng.normal(size=n_out).astype(np.float32) if op == "Gemm" and index == 1 else None
        g.dense(raw, w_scale, weights, op, bias)
        last = index == len(sizes) - 2
        if last and not last_bn:
            break
        if last:                                 # class 0's row negated, scores comparable
            gamma = rng.uniform(0.5, 2, n_out) * np.where(np.arange(n_out) == 0, -1, 1)
            g.batchnorm(gamma, rng.normal(size=n_out) * 0.1, np.zeros(n_out),
                        rng.uniform(0.5, 4, n_out))
            break
        gamma = (rng.normal(size=n_out) * 3).astype(np.float32)   # some negative: rows negated
        g.batchnorm(gamma, rng.normal(size=n_out) * 0.3, rng.normal(size=n_out) * 0.5,
                    rng.uniform(0.5, 4, n_out))
        if index == 0:
            g.step("Mul", np.float32(1.5)).step("Add", rng.normal(size=n_out).astype(np.float32))
        if activation == "ternary":
            g.quant(1.0, 2, 1, 1)
        elif activation == "bipolar":
            g.bipolar(1.0)
        else:                                    # MultiThreshold: two thresholds, {-1, 0, +1}
            t = np.sort(rng.normal(size=(n_out, 2)), axis=1).astype(np.float32)
            g.step("MultiThreshold", t, domain=domain, out_scale=1.0, out_bias=-1.0)
    x = rng.uniform(0, (2 ** input_bits) * in_scale, (400, sizes[0])).astype(np.float32)
    return g.model([1, 1, 3, 4] if image else None), x


@pytest.mark.slow       # qonnx's executor, a training run or the command line
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(activation="bipolar", weights="bipolar"),
    dict(activation="multithreshold", weights="const", op="MatMul"),
    dict(po2=False),
    dict(po2=False, activation="bipolar", weights="bipolar", domain="finn.custom_op.general"),
    dict(last_bn=False),
    dict(image=True),
], ids=["tnn", "bnn", "multithreshold-matmul", "other-scales", "finn-domain", "plain-scores",
        "flatten"])
def test_imported_graphs_equal_their_execution(kwargs):
    model_proto, x = random_net(1, **kwargs)
    model = import_qonnx(model_proto)
    check = check_import(model_proto, model, x)
    assert check["class_mismatches"] == 0 and check["score_mismatches"] == 0
    assert check["images"] == 400
    assert len(set(check["classes"].tolist())) > 1          # the classes vary
    info = model.meta["import"]
    assert info["exact_scores"] is (not kwargs.get("last_bn", True))
    kind = "binary" if kwargs.get("weights") == "bipolar" else "ternary"
    assert model.weight_kind == kind and model.sizes == [12, 9, 7, 5]


@pytest.mark.slow       # qonnx's executor, a training run or the command line
def test_the_hidden_activations_equal_the_graphs():
    # Every hidden neuron's activation, from the graph's own execution, on inputs around the
    # thresholds: the integer thresholds are exact.
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    model_proto, x = random_net(2, sizes=(12, 9, 5))
    model = import_qonnx(model_proto)
    wrapper = ModelWrapper(model_proto).transform(InferShapes())
    act = [n for n in wrapper.graph.node if n.op_type == "Quant"][-1].output[0]
    ints = quantize_inputs(x, model.meta["import"])
    trace = reference(model, ints)
    for i in range(100):
        context = execute_onnx(wrapper, {"x": x[i:i + 1]}, return_full_exec_context=True)
        assert (context[act].reshape(-1) == trace.acts[0][i]).all()


def test_input_quantisation_is_the_graphs():
    info = {"input_scale": 0.5, "input_bits": 3, "input_rounding": "ROUND"}
    x = np.array([[0.0, 0.24, 0.25, 0.26, 0.75, 1.25, 3.4, 3.6, 100.0, -2.0]])
    # half to even at 0.5 and 2.5, clamped to [0, 7]
    assert quantize_inputs(x, info).tolist() == [[0, 0, 0, 1, 2, 2, 7, 7, 7, 0]]
    floor = dict(info, input_rounding="FLOOR")
    assert quantize_inputs(x, floor).tolist() == [[0, 0, 0, 0, 1, 2, 6, 7, 7, 0]]


# -- refusals ---------------------------------------------------------------------------------------

def small(**changes):
    """A one-hidden-layer ternary graph, built with ``changes`` to one of its parts."""
    rng = np.random.default_rng(0)
    g = GraphMaker(6, changes.get("domain", QONNX))
    g.quant(1.0, *changes.get("input", (4, 0, 0)))
    g.dense(rng.normal(size=(4, 6)).astype(np.float32) * 0.4, np.float32(0.5),
            changes.get("weights", "ternary"))
    if "weight_bits" in changes:
        g.nodes[-2].input[3] = g.const(float(changes["weight_bits"]))
    g.batchnorm(np.ones(4), np.zeros(4), np.zeros(4), np.ones(4))
    if "extra" in changes:
        changes["extra"](g)
    g.quant(changes.get("act_scale", 1.0), 2, 1, 1)
    g.dense(rng.normal(size=(3, 4)).astype(np.float32), np.float32(1.0), "ternary")
    return g.model()


def relu(g):
    g.data = g.node("Relu", [g.data])


def branch(g):
    g.node("Relu", [g.data])                   # a second consumer of the same value


@pytest.mark.parametrize("changes, line", [
    (dict(input=(4, 1, 0)), r"node 'Quant_\d+' \(Quant\) the inputs must be unsigned integers "
                            r"of 1 to 8 bits, not 4 bits signed=1 narrow=0"),
    (dict(input=(9, 0, 0)), r"node .* the inputs must be unsigned integers of 1 to 8 bits, not 9 bits"),
    (dict(weight_bits=4), r"node 'Quant_\d+' \(Quant\) weights must be binary \(BipolarQuant\) "
                          r"or ternary \(Quant of 2 bits, signed, narrow\), not 4 bits signed=1 "
                          r"narrow=1"),
    (dict(extra=relu), r"node 'Relu_\d+' \(Relu\) is not supported here: after a layer's "
                       r"product come BatchNormalization, Mul, Div, Add, Sub with constants, "
                       r"then an activation"),
    (dict(extra=branch), r"the output of node 'BatchNormalization_\d+' \(BatchNormalization\) "
                         r"must feed exactly one node \(a network is one path\), not 2"),
    (dict(act_scale=np.ones(4, dtype=np.float32)),
     r"node 'Quant_\d+' \(Quant\) activation scale must be one value \(the next layer's inputs "
     r"share it\), not shape \[4\]"),
    (dict(domain="my.domain"), r"node 'Quant_\d+' \(Quant\) must be in a QONNX domain "
                               r"\(qonnx.custom_op.general, finn.custom_op.general, finn\), "
                               r"not 'my.domain'"),
])
def test_refusals_name_the_node_and_the_rule(changes, line):
    with pytest.raises(NmflowError, match=f"^{line}"):
        import_qonnx(small(**changes))


def test_a_graph_without_an_input_quant_or_ending_in_an_activation_is_refused():
    g = GraphMaker(6)
    g.dense(np.ones((3, 6), dtype=np.float32), np.float32(1.0), "ternary")
    with pytest.raises(NmflowError, match=r"^the graph input must go first through a Quant .*"
                                          r"not node 'Gemm_\d+' \(Gemm\)$"):
        import_qonnx(g.model())
    g = GraphMaker(6)
    g.quant(1.0, 4, 0, 0)
    g.dense(np.ones((3, 6), dtype=np.float32), np.float32(1.0), "ternary").quant(1.0, 2, 1, 1)
    with pytest.raises(NmflowError, match=r"^the graph must end with a layer's scores"):
        import_qonnx(g.model())


def test_bad_files_are_one_line(tmp_path):
    with pytest.raises(NmflowError, match=r"^ONNX file '.*missing.onnx' does not exist$"):
        import_qonnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(NmflowError, match=r"^ONNX file '.*bad.onnx' cannot be read as an ONNX "
                                          r"model: "):
        import_qonnx(bad)


@pytest.mark.slow       # qonnx's executor, a training run or the command line
def test_the_command_refuses_in_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "relu.onnx"
    onnx.save(small(extra=relu), path)
    result = nmflow("import", path, "--run", tmp_path / "run")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nmflow: error: node 'Relu_")
    assert not (tmp_path / "run" / "hwmodel.json").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_graphs_import_or_give_one_line(data):
    """Bytes of a valid graph changed, cut or extended: a model or one NmflowError line."""
    blob = bytearray(small().SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(blob) - 1))
        if action == "flip":
            blob[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del blob[at:at + data.draw(st.integers(1, 16))]
        else:
            blob[at:at] = bytes(data.draw(st.lists(st.integers(0, 255), min_size=1,
                                                   max_size=8)))
        if len(blob) < 2:
            break
    try:
        proto = onnx.load_from_string(bytes(blob))
    except Exception:                            # not a protobuf at all: the file path refuses
        return
    try:
        model = import_qonnx(proto)
    except NmflowError as error:
        assert "\n" not in str(error)
    else:
        assert model.sizes[0] == model.n_inputs


OPS = ["Relu", "Gemm", "MatMul", "Quant", "BipolarQuant", "MultiThreshold", "BatchNormalization",
       "Mul", "Add", "Sub", "Div", "Reshape", "Identity", "Conv", "Sigmoid"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_structurally_mutated_graphs_import_or_give_one_line(data):
    """A valid graph with a node's op, domain, inputs or attributes or a constant changed: a
    model or one NmflowError line, never another exception."""
    proto = small()
    for _ in range(data.draw(st.integers(1, 3))):
        nodes = list(proto.graph.node)
        node = nodes[data.draw(st.integers(0, len(nodes) - 1))]
        action = data.draw(st.sampled_from(["op", "domain", "drop", "attr", "const", "rename"]))
        if action == "op":
            node.op_type = data.draw(st.sampled_from(OPS))
        elif action == "domain":
            node.domain = data.draw(st.sampled_from(["", QONNX, "finn", "other"]))
        elif action == "drop" and len(node.input) > 1:
            del node.input[data.draw(st.integers(0, len(node.input) - 1))]
        elif action == "attr":
            node.attribute.append(helper.make_attribute(
                data.draw(st.sampled_from(["signed", "narrow", "transB", "rounding_mode",
                                           "out_bias", "epsilon"])),
                data.draw(st.sampled_from([0, 1, 2, -1.0, 0.5, "FLOOR", "bogus"]))))
        elif action == "const":
            init = proto.graph.initializer[data.draw(
                st.integers(0, len(proto.graph.initializer) - 1))]
            value = numpy_helper.to_array(init).astype(np.float32)
            value = value * np.float32(data.draw(st.sampled_from([0, -1, 2, np.nan, np.inf])))
            if data.draw(st.booleans()):
                value = value.reshape(-1)[:max(1, value.size // 2)]
            init.CopyFrom(numpy_helper.from_array(value, init.name))
        else:
            node.input[0] = data.draw(st.sampled_from(["x", "nowhere", node.output[0]]))
    try:
        model = import_qonnx(proto)
    except NmflowError as error:
        assert "\n" not in str(error) and str(error)
    else:
        assert model.n_classes == 3


# -- Brevitas's own export, end to end -----------------------------------------------------------

def brevitas_onnx(path, kind, seed=0, steps=150):
    """Train an LFC-like Brevitas network (5-bit unsigned inputs, 64-32-16-10, binary or ternary
    weights and activations, BatchNorm) on digits for a few steps and export it to QONNX. The
    TNN's scales are powers of two (a fixed-point input quantizer, weight scale 2**-4,
    activation scale 1), the BNN keeps Brevitas's defaults (a float input scale, weight scale 0.1)."""
    import torch
    import torch.nn as nn
    import brevitas.nn as qnn
    from brevitas.export import export_qonnx
    from brevitas.quant import Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat
    from brevitas.quant.binary import (SignedBinaryActPerTensorConst,
                                       SignedBinaryWeightPerTensorConst)
    from brevitas.quant.ternary import (SignedTernaryActPerTensorConst,
                                        SignedTernaryWeightPerTensorConst)
    from nmflow.golden.datasets import load_digits
    weight, act = ((SignedBinaryWeightPerTensorConst, SignedBinaryActPerTensorConst)
                   if kind == "bnn" else
                   (SignedTernaryWeightPerTensorConst, SignedTernaryActPerTensorConst))
    torch.manual_seed(seed)
    po2 = kind == "tnn"
    layers = [qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint if po2
                                else Uint8ActPerTensorFloat, bit_width=5,
                                return_quant_tensor=True)]
    scales = {"weight_scaling_const": 2.0 ** -4} if po2 else {}
    act_scales = {"scaling_const": 1.0} if po2 else {}
    sizes = (64, 32, 16, 10)
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [qnn.QuantLinear(n_in, n_out, bias=False, weight_quant=weight, **scales),
                   nn.BatchNorm1d(n_out)]
        if index < len(sizes) - 2:
            layers.append(qnn.QuantIdentity(act_quant=act, return_quant_tensor=True,
                                            **act_scales))
    net = nn.Sequential(*layers)
    data = load_digits()
    x = torch.tensor(data.x_train, dtype=torch.float32)
    y = torch.tensor(data.y_train)
    optimiser = torch.optim.Adam(net.parameters(), 0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,), generator=generator)
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    export_qonnx(net, torch.zeros(1, 64), str(path))
    return path


@pytest.fixture(scope="module")
def brevitas_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("brevitas")
    return {kind: brevitas_onnx(folder / f"{kind}.onnx", kind) for kind in ("bnn", "tnn")}


@pytest.mark.slow       # qonnx's executor, a training run or the command line
@pytest.mark.parametrize("kind", ["bnn", "tnn"])
def test_a_brevitas_network_goes_through_the_flow(brevitas_files, kind, tmp_path):
    run = tmp_path / "run"
    result = nmflow("import", brevitas_files[kind], "--run", run)
    assert result.returncode == 0, result.stderr[-3000:]
    golden = json.loads((run / "golden.json").read_text())
    assert golden["onnx_class_mismatches"] == 0 and golden["onnx_score_mismatches"] == 0
    # powers of two: the graph's outputs equal the import's exactly; else within rounding
    exact = kind == "tnn"
    assert (golden["onnx_scores_compared"] == "==") is exact
    assert (golden["onnx_score_max_error"] == 0) is exact
    assert golden["agreement"] == 1.0 and golden["test_images"] == 360
    assert golden["int_accuracy"] > 0.6                   # learned something in 150 steps
    assert golden["weight_kind"] == ("binary" if kind == "bnn" else "ternary")
    assert golden["sizes"] == [64, 32, 16, 10]
    for step in (["verilog", "--lanes", "16"], ["sim", "--limit", "40"], ["compare"]):
        result = nmflow(*step, "--run", run)
        assert result.returncode == 0, f"{step}: {result.stderr[-3000:]}"
    compared = json.loads((run / "compare.json").read_text())
    assert compared["mismatches"] == 0 and compared["images"] == 40
    # the RTL's classes are the graph's: the compare is against the imported model, which
    # equals the graph's execution on every test image (above). (The build reads the hardware
    # model as the simulation does, whatever made it: test_cli builds a trained one.)


# -- export -------------------------------------------------------------------------------------

@pytest.mark.slow       # qonnx's executor
@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_exported_graphs_compute_the_integer_model(kind):
    """Random models (thresholds, scales and offsets the tests choose, offsets past 2**24) as
    QONNX graphs, executed by qonnx's own executor here: every score and class equal."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from nmflow.golden.qonnx import to_qonnx
    from nmflow.golden.synthetic import random_model
    from nmflow.golden.hwmodel import HardwareModel, Layer
    model = random_model([20, 16, 12, 6], input_bits=3, weight_kind=kind, seed=4)
    rng = np.random.default_rng(0)
    last = model.layers[-1]
    offsets = rng.integers(-2 ** 30, 2 ** 30, last.n_out)      # past float32's 2**24
    model = HardwareModel(3, kind, model.layers[:-1] + (
        Layer(last.weights, "none", scale=last.scale, offset=offsets),))
    x = rng.integers(0, 8, (200, 20))
    trace = reference(model, x)
    from qonnx.transformation.infer_shapes import InferShapes
    wrapper = ModelWrapper(to_qonnx(model)).transform(InferShapes())
    assert {n.op_type for n in wrapper.graph.node} == {
        "Quant", "MatMul", "MultiThreshold", "Cast", "Mul", "Add",
        "BipolarQuant" if kind == "binary" else "Quant"}
    for i in range(len(x)):
        out = execute_onnx(wrapper, {"x": x[i:i + 1].astype(np.float32)})["scores"]
        assert out.dtype == np.int64 and (out[0] == trace.scores[i]).all()
    assert np.abs(trace.scores).max() > 2 ** 24


@pytest.mark.slow       # a training run and qonnx's executor
def test_export_format_qonnx_writes_a_checked_graph(tmp_path):
    run = tmp_path / "run"
    for step in (["train", "--epochs", "2", "--hidden", "16"], ["export", "--format", "qonnx"]):
        result = nmflow(*step, "--run", run)
        assert result.returncode == 0, result.stderr[-3000:]
    golden = json.loads((run / "golden.json").read_text())
    assert golden["qonnx"]["mismatches"] == 0 and golden["qonnx"]["images"] == 360
    proto = onnx.load(run / "hwmodel.onnx")
    assert proto.graph.output[0].name == "scores"


@pytest.mark.slow       # qonnx's executor
def test_an_exported_graph_imports_back_to_the_same_model():
    from nmflow.golden.qonnx import to_qonnx
    from nmflow.golden.synthetic import random_model
    for kind in ("binary", "ternary"):
        model = random_model([20, 16, 12, 6], input_bits=3, weight_kind=kind, seed=5)
        proto = to_qonnx(model)
        back = import_qonnx(proto)
        assert back.weight_kind == kind and back.input_bits == 3
        for a, b in zip(model.layers, back.layers):
            assert a.activation == b.activation
            for name in ("weights", "t_hi", "t_lo", "scale", "offset"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None and y is None) or (x == y).all(), name
        x = np.random.default_rng(1).integers(0, 8, (60, 20))
        check = check_import(proto, back, x)
        assert check["class_mismatches"] == 0 and check["score_mismatches"] == 0


def test_the_read_error_sweep_feeds_an_imported_model_its_integers():
    from nmflow.flow.sweep import _model_inputs
    model = import_qonnx(random_net(3)[0])          # input Quant: 4 bits, scale 0.5
    x = np.array([[0.0, 0.3, 1.0, 7.4, 7.6, 100.0] * 2])
    assert _model_inputs(model, x).tolist() == [[0, 1, 2, 15, 15, 15] * 2]
    assert model.meta["import"]["input_scale"] == 0.5


def gemm_trans_a(g):
    g.nodes[-2].attribute.append(helper.make_attribute("transA", 1))


def zero_point(g):
    g.nodes[0].input[2] = g.const(1.0)


def constant_minus_data(g):
    g.step("Sub", np.float32(1.0), data_first=False)


def odd_multithreshold(g):
    g.step("MultiThreshold", np.zeros((4, 1), dtype=np.float32), domain=QONNX, out_scale=1.0,
           out_bias=-1.0)


def bad_rounding(g):
    g.nodes[0].attribute[2].CopyFrom(helper.make_attribute("rounding_mode", "SIDEWAYS"))


@pytest.mark.parametrize("hook, line", [
    (gemm_trans_a, r"node 'Gemm_\d+' \(Gemm\) transA must be 0, not 1"),
    (zero_point, r"node 'Quant_\d+' \(Quant\) zero point must be 0, not \[1.0\]"),
    (constant_minus_data, r"node 'Sub_\d+' \(Sub\) must take the data as its first input"),
    (odd_multithreshold, r"node 'MultiThreshold_\d+' \(MultiThreshold\) out_scale and out_bias "
                         r"must give \{-c, \+c\} or \{-c, 0, \+c\} \(out_bias = -out_scale / 2 "
                         r"for one threshold, -out_scale for two\), not 1.0 and -1.0"),
    (bad_rounding, r"node 'Quant_\d+' \(Quant\) rounding_mode must be one of ROUND, HALF_EVEN, "
                   r"CEIL, FLOOR, UP, DOWN, HALF_UP, HALF_DOWN, not 'SIDEWAYS'"),
])
def test_more_refusals_name_the_node_and_the_rule(hook, line):
    with pytest.raises(NmflowError, match=f"^{line}"):
        import_qonnx(small(extra=hook))
