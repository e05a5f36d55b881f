"""Import binary and ternary networks from QONNX graphs (Brevitas's QONNX export, FINN's files)
into the integer hardware model (:class:`~nmflow.golden.hwmodel.HardwareModel`).

Reading needs ``onnx`` only; :func:`execute` (the cross-check) needs ``qonnx`` and ``onnxruntime``.

The graph is one path from its input to its output (constants aside)::

    input -> [Reshape | Flatten | Identity]* -> Quant (the integer inputs)
          -> per layer: MatMul | Gemm                 (weights: a constant through BipolarQuant,
                                                        or Quant of 2 bits, signed, narrow)
                        -> [BatchNormalization | Mul | Div | Add | Sub]*   (constant operands)
                        -> BipolarQuant | Quant 2-bit signed narrow | MultiThreshold
                           (hidden layers: sign or ternary), or the graph's output (scores)

Inputs
    A ``Quant`` on the graph input, unsigned, zero point 0, 1 to 8 bits, a positive scalar
    scale ``s``: the engine's inputs are its integers ``clip(round(x / s), 0, 2**bits - 1)``.
Weights
    ``BipolarQuant`` (values ``sign(W)``, 0 to +1: a binary model) or ``Quant`` with 2 bits,
    signed and narrow (values ``{-1, 0, +1}``: ternary), or a constant already in ``{-1, 0, +1}``
    times one positive scale; the scale is positive, per tensor or per output neuron.
Between a layer's product and its activation
    Every element-wise constant op composes, per neuron, into ``y = f(k * a)`` with ``a`` the
    integer pre-activation and ``k`` the product of the input and weight scales. Where ``f`` is
    decreasing the row is negated (as :mod:`nmflow.golden.export` does for negative gamma).
Hidden activations
    The activation of ``f(k * a)`` is a step function of ``a``; its integer thresholds are
    computed in float64 and each is checked, and if need be corrected by bisection, against a
    float32 evaluation of the graph's own ops in the graph's order (ONNX's BatchNormalization
    inference formula as ONNX Runtime evaluates it; QONNX's Quant: divide, clamp, round by its mode, BipolarQuant: ``x >= 0``,
    MultiThreshold: ``x >= t``). The values after it must be ``{-c, +c}`` or ``{-c, 0, +c}`` with
    one scalar ``c``, the next layer's input scale.
Scores
    The last layer's ``f(k * a)``: if ``f`` is the same increasing map for every class, the
    scores are ``a`` itself (scale 1, offset 0: the class is exact); otherwise a per-class
    fixed-point affine as :func:`nmflow.golden.export.export` stores BatchNorm (the class then
    matches the graph's unless two scores are within the rounding).

Anything else (another op, attribute, domain, a branch, a per-channel activation scale, a shape
that does not chain) is refused with one line naming the node, its op type and the rule.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NmflowError
from .export import FLOAT32_EXACT, MAX_FRAC_BITS, _settle
from .hwmodel import OFFSET_LIMIT, SCALE_LIMIT, HardwareModel, Layer, preact_bound

__all__ = ["import_qonnx", "to_qonnx", "check_export", "execute", "quantize_inputs",
           "check_import", "QONNX_DOMAINS", "MAX_ONNX_BYTES"]

#: Domains of the QONNX custom ops (FINN's older files use the ``finn`` ones).
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "finn")
#: Largest ONNX file read (an LFC-size network is a few MB).
MAX_ONNX_BYTES = 1 << 30
#: Relative tolerance of the scores of a graph whose float32 product rounds (a few float32 ulps
#: of a sum of up to a few thousand terms).
SCORE_RTOL = 2.0 ** -16
_RESHAPES = ("Reshape", "Flatten", "Identity")
_AFFINE = ("BatchNormalization", "Mul", "Div", "Add", "Sub")
_ACTIVATIONS = ("BipolarQuant", "Quant", "IntQuant", "MultiThreshold")
_ROUNDING = {
    "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)), "DOWN": np.fix,
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5),
}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise NmflowError("reading ONNX files needs the onnx package: run 'make setup' "
                          "(pip install -r requirements.txt)") from None
    return onnx


def _node_name(node):
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _refuse(node, rule):
    raise NmflowError(f"{_node_name(node)} {rule}")


@dataclass
class _Step:
    """One element-wise op between a layer's product and its activation: ``kind`` and its
    float32 constants, each a scalar or one value per neuron."""
    kind: str
    values: tuple


@dataclass
class _LayerGraph:
    """What one layer of the graph computes, before it becomes integers."""
    weights: np.ndarray                     # int8 [out, in], {-1, 0, +1}
    k: np.ndarray                           # float64 [out]: input scale x weight scale
    in_scale: float = 1.0                   # the scale of the layer's inputs
    steps: list = field(default_factory=list)
    activation: tuple = None                # (kind, params) or None for the last layer
    out_scale: float = None
    int_tail: list = None                   # scores in integers: [(kind, int64 value)]


class _Graph:
    """An ONNX graph read as one path of data nodes and the constants they take."""

    def __init__(self, model):
        from onnx import numpy_helper
        graph = model.graph
        self.constants = {}
        for init in graph.initializer:
            try:
                self.constants[init.name] = numpy_helper.to_array(init)
            except Exception as error:          # a malformed tensor: one line
                raise NmflowError(f"initializer {init.name!r} cannot be read: "
                                  f"{str(error).splitlines()[0] if str(error) else error}") \
                    from None
        self.producer, self.consumers = {}, {}
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.constants[node.output[0]] = self._constant_node(node)
        inputs = [i for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise NmflowError(f"the graph must have one data input, not {len(inputs)} "
                              f"({', '.join(i.name for i in inputs) or 'none'})")
        if len(graph.output) != 1:
            raise NmflowError(f"the graph must have one output, not {len(graph.output)}")
        self.input = inputs[0]
        self.output = graph.output[0].name
        self.used = set()

    @staticmethod
    def _constant_node(node):
        from onnx import helper, numpy_helper
        attrs = {a.name: a for a in node.attribute}
        if "value" not in attrs:
            _refuse(node, "must hold a tensor 'value'")
        return numpy_helper.to_array(helper.get_attribute_value(attrs["value"]))

    def next(self, name):
        """The one node that consumes ``name``, or None at the graph's output."""
        users = self.consumers.get(name, [])
        if name == self.output and not users:
            return None
        if len(users) != 1:
            where = self.producer.get(name)
            what = f"the output of {_node_name(where)}" if where else f"input {name!r}"
            raise NmflowError(f"{what} must feed exactly one node (a network is one path), "
                              f"not {len(users)}")
        if id(users[0]) in self.used:
            _refuse(users[0], "is reached twice from the input: the graph has a cycle")
        self.used.add(id(users[0]))
        return users[0]

    def constant(self, node, index, what, depth=0):
        """Input ``index`` of ``node`` as a float array: a constant, or a quantizer of one."""
        if index >= len(node.input) or not node.input[index]:
            _refuse(node, f"must have its {what} as input {index}")
        name = node.input[index]
        if name in self.constants:
            value = self.constants[name]
        elif depth == 0 and name in self.producer and self.producer[name].op_type in (
                "Quant", "IntQuant", "BipolarQuant"):
            quant = self.producer[name]
            self.used.add(id(quant))
            value = _quantize(quant, *_quant_params(self, quant),
                              value=self.constant(quant, 0, "weights", depth + 1))[0]
        else:
            _refuse(node, f"must have a constant {what} (input {name!r} is computed)")
        value = np.asarray(value)
        if value.dtype.kind not in "fiu" or not np.isfinite(value.astype(np.float64)).all():
            _refuse(node, f"{what} must be finite numbers")
        return value


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_domain(node):
    custom = node.op_type in _ACTIVATIONS
    if custom and node.domain not in QONNX_DOMAINS:
        _refuse(node, f"must be in a QONNX domain ({', '.join(QONNX_DOMAINS)}), not "
                      f"{node.domain!r}")
    if not custom and node.domain not in ("", "ai.onnx"):
        _refuse(node, f"must be in the ONNX domain, not {node.domain!r}")


def _quant_params(graph, node):
    """``(kind, scale, zeropt, bits, signed, narrow, rounding)`` of a Quant or BipolarQuant."""
    scale = graph.constant(node, 1, "scale").astype(np.float32)
    if scale.size == 0 or not (scale > 0).all():
        bad = scale.ravel()[~(scale.ravel() > 0)]
        _refuse(node, f"scale must be positive, not {float(bad[0]) if bad.size else 'empty'}")
    if node.op_type == "BipolarQuant":
        return ("bipolar", scale, 0.0, 1, True, False, "ROUND")
    attrs = _attrs(node)
    zeropt = graph.constant(node, 2, "zero point")
    bits = graph.constant(node, 3, "bit width")
    if bits.size != 1 or float(bits.ravel()[0]) != int(bits.ravel()[0]):
        _refuse(node, f"bit width must be one integer, not {bits.ravel()[:3].tolist()}")
    if zeropt.size != 1 or float(zeropt.ravel()[0]) != 0:
        _refuse(node, f"zero point must be 0, not {zeropt.ravel()[:3].tolist()}")
    rounding = attrs.get("rounding_mode", b"ROUND")
    rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
    if rounding.upper() not in _ROUNDING:
        _refuse(node, f"rounding_mode must be one of {', '.join(_ROUNDING)}, not {rounding!r}")
    signed, narrow = int(attrs.get("signed", 1)), int(attrs.get("narrow", 0))
    if signed not in (0, 1) or narrow not in (0, 1):
        _refuse(node, f"signed and narrow must be 0 or 1, not {signed} and {narrow}")
    return ("int", scale, 0.0, int(bits.ravel()[0]), bool(signed), bool(narrow),
            rounding.upper())


def _quantize(node, kind, scale, zeropt, bits, signed, narrow, rounding, value=None):
    """QONNX's quantizer on ``value`` (float32): ``(rescaled output, integer levels)``."""
    x = np.asarray(value, dtype=np.float32)
    if kind == "bipolar" or (bits == 1 and signed):
        q = np.where(x >= 0, np.float32(1), np.float32(-1))
    else:
        lo = -(2 ** (bits - 1)) + narrow if signed else 0
        hi = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1 - narrow
        y = (x / scale).astype(np.float32)
        q = _ROUNDING[rounding](np.clip(y, lo, hi)).astype(np.float32)
    return (q * scale).astype(np.float32), q


def _positive_scale(node, scale, n_out, what):
    """A per-tensor or per-neuron scale as float64 [n_out]; refuse what is neither or not > 0."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 1:
        s = np.full(n_out, float(s.ravel()[0]))
    elif s.size == n_out:
        s = s.ravel()
    else:
        _refuse(node, f"{what} scale must be one value or one per output neuron ({n_out}), "
                      f"not shape {list(np.shape(scale))}")
    if not (s > 0).all():
        _refuse(node, f"{what} scale must be positive, not {float(s[~(s > 0)][0])}")
    return s


def _weights(graph, node):
    """``(int8 weights [out, in], float64 scale [out])`` of a MatMul or Gemm."""
    attrs = _attrs(node)
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) != 0:
            _refuse(node, f"transA must be 0, not {attrs['transA']}")
        for name in ("alpha", "beta"):
            if name in attrs and attrs[name] != 1.0:
                _refuse(node, f"{name} must be 1, not {attrs[name]}")
    trans = node.op_type == "Gemm" and attrs.get("transB", 0) == 1
    name = node.input[1] if len(node.input) > 1 else ""
    quant = graph.producer.get(name)
    if quant is not None and quant.op_type in ("Quant", "IntQuant", "BipolarQuant"):
        graph.used.add(id(quant))
        _check_domain(quant)
        raw = graph.constant(quant, 0, "weights")
        params = _quant_params(graph, quant)
        kind, scale, _, bits, signed, narrow = params[:6]
        if kind == "int" and not (bits == 2 and signed and narrow) and not (bits == 1 and signed):
            _refuse(quant, f"weights must be binary (BipolarQuant) or ternary (Quant of 2 bits, "
                           f"signed, narrow), not {bits} bits signed={int(signed)} "
                           f"narrow={int(narrow)}")
        _, levels = _quantize(quant, *params, value=raw)
        where = quant
    else:
        levels, scale, where = graph.constant(node, 1, "weights"), np.float32(1), node
        if not np.isin(levels, (-1, 0, 1)).all():
            _refuse(node, "weights must come through BipolarQuant or a 2-bit narrow Quant, or "
                          "be constants in {-1, 0, +1}")
    levels = np.asarray(levels)
    if levels.ndim != 2:
        _refuse(where, f"weights must be a matrix, not shape {list(levels.shape)}")
    w = levels if trans else levels.T
    scale = np.asarray(scale)
    if not trans and scale.ndim == 2:
        scale = scale.T
    n_out = w.shape[0]
    s = _positive_scale(where, scale.reshape(-1) if scale.size == n_out else scale, n_out,
                        "weight")
    if scale.size not in (1, n_out) or (scale.size == n_out and scale.ndim == 2
                                        and scale.shape[1] != 1):
        _refuse(where, f"weight scale must be one value or one per output neuron, not shape "
                       f"{list(scale.shape)}")
    if len(node.input) > 2 and node.input[2]:
        graph.constant(node, 2, "bias")                # a Gemm bias: an Add after the product
    return w.astype(np.int8), s


def _affine_step(graph, node, n_out, data):
    """An element-wise op with constant operands on ``data``, as a :class:`_Step`."""
    def per_neuron(value, what):
        v = np.asarray(value, dtype=np.float32)
        if v.size == 1:
            return v.reshape(())
        if v.size == n_out and v.shape[-1] == n_out:
            return v.reshape(n_out)
        _refuse(node, f"{what} must be one value or one per neuron ({n_out}), not shape "
                      f"{list(v.shape)}")
    if node.input[0] != data and (node.op_type == "BatchNormalization"
                                  or node.op_type in ("Sub", "Div")):
        _refuse(node, "must take the data as its first input (a constant minus or over the "
                      "data is not a monotone step)")
    if node.op_type == "BatchNormalization":
        attrs = _attrs(node)
        if attrs.get("training_mode", 0):
            _refuse(node, "training_mode must be 0")
        values = [per_neuron(graph.constant(node, i, what), what) for i, what in
                  ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance"))]
        if (values[3] < 0).any():
            _refuse(node, "variance must be >= 0")
        values.append(np.float32(attrs.get("epsilon", 1e-5)))
        return _Step("bn", tuple(values))
    if len(node.input) != 2:
        _refuse(node, f"must have 2 inputs, not {len(node.input)}")
    value = per_neuron(graph.constant(node, 1 if node.input[0] == data else 0, "operand"),
                       "operand")
    if node.op_type == "Div" and (value == 0).any():
        _refuse(node, "divisor must not be 0")
    return _Step(node.op_type.lower(), (value,))


def _apply(steps, y):
    """The element-wise ops on float32 ``y`` [..., out], in the graph's order, as ONNX Runtime
    computes them (BatchNormalization: ``x * s + (bias - mean * s)`` with
    ``s = scale * (1 / sqrt(var + eps))``, each step rounded to float32)."""
    y = np.asarray(y, dtype=np.float32)
    for step in steps:
        if step.kind == "bn":
            gamma, beta, mean, var, eps = step.values
            inv = (np.float32(1) / np.sqrt((var + eps).astype(np.float32))).astype(np.float32)
            new_scale = (inv * gamma).astype(np.float32)
            new_bias = (beta - mean * new_scale).astype(np.float32)
            y = (y * new_scale).astype(np.float32) + new_bias
        else:
            (c,) = step.values
            y = {"mul": np.multiply, "div": np.divide, "add": np.add,
                 "sub": np.subtract}[step.kind](y, c)
        y = y.astype(np.float32)
    return y


def _slope(steps, n_out):
    """float64 ``(A, B)`` [out] with ``f(y) = A * y + B`` for the composed steps."""
    a, b = np.ones(n_out), np.zeros(n_out)
    for step in steps:
        if step.kind == "bn":
            gamma, beta, mean, var, eps = (np.asarray(v, dtype=np.float64) for v in step.values)
            g = gamma / np.sqrt(var + eps)
            a, b = a * g, (b - mean) * g + beta
        else:
            c = np.asarray(step.values[0], dtype=np.float64)
            if step.kind == "mul":
                a, b = a * c, b * c
            elif step.kind == "div":
                a, b = a / c, b / c
            elif step.kind == "add":
                b = b + c
            else:
                b = b - c
    return np.broadcast_to(a, (n_out,)).copy(), np.broadcast_to(b, (n_out,)).copy()


def _scalar_scale(node, scale, what="activation"):
    s = np.asarray(scale, dtype=np.float64)
    if s.size != 1:
        _refuse(node, f"{what} scale must be one value (the next layer's inputs share it), not "
                      f"shape {list(s.shape)}")
    if not float(s.ravel()[0]) > 0:
        _refuse(node, f"{what} scale must be positive, not {float(s.ravel()[0])}")
    return float(s.ravel()[0])


def _activation(graph, node, n_out):
    """``(activation, levels, scale)``: ``"sign"`` or ``"ternary"``, the function from float32
    values to levels in {-1, 0, +1}, and the scalar scale of the values it outputs."""
    _check_domain(node)
    if node.op_type == "MultiThreshold":
        attrs = _attrs(node)
        layout = attrs.get("data_layout", b"NCHW")
        layout = layout.decode() if isinstance(layout, bytes) else str(layout)
        if layout not in ("NCHW", "NC", "NHWC"):
            _refuse(node, f"data_layout must be NCHW, NHWC or NC, not {layout!r}")
        thresholds = np.asarray(graph.constant(node, 1, "thresholds"), dtype=np.float32)
        if thresholds.ndim != 2 or thresholds.shape[0] not in (1, n_out) \
                or thresholds.shape[1] not in (1, 2):
            _refuse(node, f"thresholds must have shape [{n_out} or 1, 1 or 2], not "
                          f"{list(thresholds.shape)}")
        out_scale = float(attrs.get("out_scale", 1.0))
        out_bias = float(attrs.get("out_bias", 0.0))
        steps = thresholds.shape[1]
        c = out_scale / 2 if steps == 1 else out_scale
        if not c > 0 or out_bias != -c:
            _refuse(node, f"out_scale and out_bias must give {{-c, +c}} or {{-c, 0, +c}} "
                          f"(out_bias = -out_scale / 2 for one threshold, -out_scale for two), "
                          f"not {out_scale} and {out_bias}")
        t = np.broadcast_to(thresholds, (n_out, steps))

        def levels(y):
            count = (np.asarray(y, dtype=np.float32)[..., None] >= t).sum(axis=-1)
            return (count * (2 if steps == 1 else 1) - 1).astype(np.int8)
        return ("sign" if steps == 1 else "ternary"), levels, c
    params = _quant_params(graph, node)
    kind, scale, _, bits, signed, narrow = params[:6]
    if kind == "bipolar" or (bits == 1 and signed):
        activation = "sign"
    elif bits == 2 and signed and narrow:
        activation = "ternary"
    else:
        _refuse(node, f"an activation must be binary (BipolarQuant) or ternary (Quant of 2 bits, "
                      f"signed, narrow), not {bits} bits signed={int(signed)} "
                      f"narrow={int(narrow)}")
    c = _scalar_scale(node, scale)

    def levels(y):
        return _quantize(node, *params, value=y)[1].astype(np.int8)
    return activation, levels, c


def _load(source):
    onnx = _onnx()
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    if not path.is_file():
        raise NmflowError(f"ONNX file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise NmflowError(f"ONNX file {str(path)!r} must be at most {MAX_ONNX_BYTES} bytes, not "
                          f"{size}")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise NmflowError(f"ONNX file {str(path)!r} cannot be read as an ONNX model: "
                          f"{first}") from None


def _input_size(value_info):
    dims = value_info.type.tensor_type.shape.dim
    sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(sizes) < 2 or any(s is None for s in sizes[1:]):
        return None, sizes
    return int(np.prod(sizes[1:])), sizes


def _walk(graph):
    """``(input_bits, input_scale, [_LayerGraph])`` along the graph's one path."""
    data = graph.input.name
    node = graph.next(data)
    while node is not None and node.op_type in _RESHAPES:
        _check_domain(node)
        data, node = node.output[0], graph.next(node.output[0])
    if node is None or node.op_type not in ("Quant", "IntQuant"):
        what = "the graph's output" if node is None else _node_name(node)
        raise NmflowError(f"the graph input must go first through a Quant (the integer inputs: "
                          f"unsigned, 1 to 8 bits, zero point 0), not {what}")
    _check_domain(node)
    kind, scale, _, bits, signed, narrow = _quant_params(graph, node)[:6]
    if signed or narrow or not 1 <= bits <= 8:
        _refuse(node, f"the inputs must be unsigned integers of 1 to 8 bits, not {bits} bits "
                      f"signed={int(signed)} narrow={int(narrow)}")
    c = _scalar_scale(node, scale, "input")
    input_bits, input_scale = bits, c
    graph.input_rounding = _quant_params(graph, node)[6]
    layers = []
    n_in, _ = _input_size(graph.input)
    data, node = node.output[0], graph.next(node.output[0])
    while True:
        while node is not None and node.op_type in _RESHAPES:
            _check_domain(node)
            data, node = node.output[0], graph.next(node.output[0])
        if node is None:
            raise NmflowError("the graph must end with a layer's scores (a MatMul or Gemm), not "
                              "an activation")
        _check_domain(node)
        if node.op_type not in ("MatMul", "Gemm"):
            _refuse(node, "is not supported here: a layer starts with MatMul or Gemm")
        if node.input[0] != data:
            _refuse(node, "must take the data as its first input")
        w, s = _weights(graph, node)
        if n_in is not None and w.shape[1] != n_in:
            _refuse(node, f"weights must take {n_in} inputs (the previous layer's outputs), "
                          f"not {w.shape[1]}")
        layer = _LayerGraph(weights=w, k=c * s, in_scale=c)
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            bias = np.asarray(graph.constant(node, 2, "bias"), dtype=np.float32)
            if bias.size not in (1, w.shape[0]):
                _refuse(node, f"bias must be one value or one per neuron ({w.shape[0]}), not "
                              f"shape {list(bias.shape)}")
            layer.steps.append(_Step("add", (bias.reshape(()) if bias.size == 1
                                              else bias.reshape(-1),)))
        data, node = node.output[0], graph.next(node.output[0])
        while node is not None and node.op_type in _AFFINE:
            _check_domain(node)
            layer.steps.append(_affine_step(graph, node, w.shape[0], data))
            data, node = node.output[0], graph.next(node.output[0])
        layers.append(layer)
        n_in = w.shape[0]
        if node is not None and node.op_type == "Cast":
            _integer_tail(graph, node, layer)
            return input_bits, input_scale, layers
        if node is None:
            return input_bits, input_scale, layers
        if node.op_type not in _ACTIVATIONS:
            _check_domain(node)
            _refuse(node, f"is not supported here: after a layer's product come "
                          f"{', '.join(_AFFINE)} with constants, then an activation "
                          f"({', '.join(_ACTIVATIONS)}) or the graph's output")
        layer.activation = _activation(graph, node, w.shape[0])
        c = layer.activation[2]
        data, node = node.output[0], graph.next(node.output[0])


def _integer_tail(graph, node, layer):
    """Scores in integers (what :func:`to_qonnx` writes): the last product ``Cast`` to int64 or
    int32, then ``Mul`` and ``Add`` by integer constants, then the graph's output."""
    _check_domain(node)
    to = _attrs(node).get("to")
    if to not in (6, 7):                    # TensorProto.INT32, INT64
        _refuse(node, f"to must be int32 or int64 (integer scores), not type {to}")
    if layer.steps or not _power_of_two(layer.k) or not (layer.k == 1).all():
        _refuse(node, "must take the layer's integer product itself (input and weight scales "
                      "of 1, no op between)")
    layer.int_tail = []
    data, node = node.output[0], graph.next(node.output[0])
    n_out = layer.weights.shape[0]
    while node is not None:
        _check_domain(node)
        if node.op_type not in ("Mul", "Add") or len(node.input) != 2:
            _refuse(node, "is not supported after integer scores: Mul and Add by integer "
                          "constants, then the graph's output")
        value = graph.constant(node, 1 if node.input[0] == data else 0, "operand")
        if value.dtype.kind not in "iu" or value.size not in (1, n_out):
            _refuse(node, f"operand must be one integer or one per class ({n_out}), not "
                          f"{value.dtype} of shape {list(value.shape)}")
        layer.int_tail.append((node.op_type, np.broadcast_to(
            value.astype(np.int64).reshape(-1), (n_out,)).copy()))
        data, node = node.output[0], graph.next(node.output[0])


def _hidden(layer, index, input_bits):
    """The integer :class:`Layer` of a hidden layer: rows oriented, thresholds settled."""
    a_coef, _ = _slope(layer.steps, layer.weights.shape[0])
    gain = a_coef * layer.k
    sign = np.where(gain < 0, -1, 1).astype(np.int64)
    w = (layer.weights.astype(np.int64) * sign[:, None]).astype(np.int8)
    bound = preact_bound(w, input_bits, index)
    activation, levels, _ = layer.activation

    def predicate(at_least):
        def test(a_stored):
            a = np.asarray(a_stored, dtype=np.int64) * sign
            y = (layer.k * a).astype(np.float32)
            return levels(_apply(layer.steps, y)) >= at_least
        return test
    start = np.zeros(len(sign), dtype=np.int64)
    t_hi, _ = _settle(start, predicate(1), bound)
    t_lo = _settle(start, predicate(0), bound)[0] if activation == "ternary" else None
    return Layer(w, activation, t_hi=t_hi.astype(np.int64),
                 t_lo=None if t_lo is None else t_lo.astype(np.int64))


def _scores(layer, index):
    """The last layer: ``(Layer, frac_bits, exact)``; scores ``a`` when every class has the same
    increasing map, else a per-class fixed-point affine."""
    n_out = layer.weights.shape[0]
    if layer.int_tail is not None:
        scale, offset = np.ones(n_out, dtype=object), np.zeros(n_out, dtype=object)
        for kind, value in layer.int_tail:         # exact: Python integers
            if kind == "Mul":
                scale, offset = scale * value.astype(object), offset * value.astype(object)
            else:
                offset = offset + value.astype(object)
        sign = np.where(scale < 0, -1, 1)
        scale = np.abs(scale)
        if (scale >= SCALE_LIMIT).any() or (np.abs(offset) >= OFFSET_LIMIT).any():
            raise NmflowError(f"layer {index} integer scores must have scales below "
                              f"{SCALE_LIMIT} and offsets below {OFFSET_LIMIT} in magnitude, "
                              f"not {int(scale.max())} and {int(np.abs(offset).max())}")
        w = (layer.weights.astype(np.int64) * sign[:, None].astype(np.int64)).astype(np.int8)
        return (Layer(w, "none", scale=scale.astype(np.int64), offset=offset.astype(np.int64)),
                0, True)
    a_coef, b_coef = _slope(layer.steps, n_out)
    gain = a_coef * layer.k
    if (gain == gain[0]).all() and gain[0] > 0 and (b_coef == b_coef[0]).all():
        return (Layer(layer.weights, "none", scale=np.ones(n_out, dtype=np.int64),
                      offset=np.zeros(n_out, dtype=np.int64)), 0, True)
    sign = np.where(gain < 0, -1, 1)
    w = (layer.weights.astype(np.int64) * sign[:, None]).astype(np.int8)
    for frac in range(MAX_FRAC_BITS, -1, -1):
        scale = np.rint(np.ldexp(np.abs(gain), frac))
        offset = np.rint(np.ldexp(b_coef, frac))
        if (scale < SCALE_LIMIT).all() and (np.abs(offset) < OFFSET_LIMIT).all():
            return (Layer(w, "none", scale=scale.astype(np.int64),
                          offset=offset.astype(np.int64)), frac, False)
    raise NmflowError(f"layer {index} scores cannot be stored: their per-class scale and offset "
                      f"must round below {SCALE_LIMIT} and {OFFSET_LIMIT}")


def _power_of_two(values):
    """True if every value is a power of two: a layer whose input and weight scales are has an
    exact float32 product (integers times powers of two add exactly below 2**24)."""
    values = np.asarray(values, dtype=np.float64)
    return bool((values > 0).all() and (np.frexp(values)[0] == 0.5).all())


def import_qonnx(source, *, meta=None):
    """Read a QONNX graph (a path or an ``onnx.ModelProto``) into a :class:`HardwareModel`.

    ``meta["import"]`` records the file, the input scale (the graph's inputs are the engine's
    integers times it), the weight kind and whether the scores are exact. Raises
    :class:`NmflowError` with one line for anything the module docstring does not list.
    """
    model = _load(source)
    try:
        graph = _Graph(model)
        input_bits, input_scale, parts = _walk(graph)
    except NmflowError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise NmflowError(f"the graph cannot be read as a binary or ternary network: "
                          f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") \
            from None
    for node in model.graph.node:
        if id(node) in graph.used or node.op_type == "Constant":
            continue
        _refuse(node, "is not on the network's path from the input to the output")
    kinds = set()
    layers = []
    for index, part in enumerate(parts):
        bound = preact_bound(part.weights, input_bits, index)
        if bound >= FLOAT32_EXACT:
            raise NmflowError(f"layer {index} pre-activation bound must be below "
                              f"{FLOAT32_EXACT} (exact in float32), not {bound}")
        kinds.add("ternary" if (part.weights == 0).any() else "binary")
        if index < len(parts) - 1:
            layers.append(_hidden(part, index, input_bits))
        else:
            last, frac, exact = _scores(part, index)
            layers.append(last)
    weight_kind = "ternary" if "ternary" in kinds or any(
        p.activation and p.activation[0] == "ternary" for p in parts) else "binary"
    meta = {} if meta is None else dict(meta)
    meta["import"] = {
        "format": "qonnx", "source": str(source) if isinstance(source, (str, Path)) else None,
        "input_bits": input_bits, "input_scale": input_scale,
        "input_rounding": graph.input_rounding, "weight_kind": weight_kind,
        "nodes": len(model.graph.node), "exact_scores": exact, "score_frac_bits": frac,
        "exact_products": [_power_of_two(p.k) and _power_of_two(p.in_scale) for p in parts]}
    return HardwareModel(input_bits=input_bits, weight_kind=weight_kind, layers=layers,
                         score_frac_bits=frac, meta=meta)


def execute(source, x, input_scale=1.0):
    """Run the QONNX graph on inputs ``x`` [N, inputs] times ``input_scale`` (1: ``x`` as the
    graph takes it) with qonnx's executor; return its outputs [N, classes] in the graph's
    output type."""
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes
        import onnxruntime  # noqa: F401  (qonnx runs the standard nodes with it)
    except ImportError:
        raise NmflowError("running ONNX graphs needs qonnx and onnxruntime: run 'make setup' "
                          "(pip install -r requirements.txt)") from None
    model = ModelWrapper(_load(source))
    model = model.transform(InferShapes())
    inputs = [i for i in model.graph.input
              if i.name not in {init.name for init in model.graph.initializer}]
    name = inputs[0].name
    _, sizes = _input_size(inputs[0])
    shape = [1] + [int(s) for s in sizes[1:]] if sizes and None not in sizes[1:] else None
    x = np.asarray(x)
    values = (x.astype(np.float32) * np.float32(input_scale)).astype(np.float32)
    out = model.graph.output[0].name
    rows = []
    for row in values:
        feed = row.reshape(shape) if shape else row.reshape(1, -1)
        try:
            rows.append(np.asarray(execute_onnx(model, {name: feed})[out]).reshape(-1))
        except Exception as error:              # qonnx and onnxruntime raise anything
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise NmflowError(f"qonnx cannot execute the graph: {first}") from None
    return np.stack(rows)


def quantize_inputs(x, info):
    """The engine's integer inputs for raw inputs ``x`` as the graph's input Quant makes them
    (``info`` is a model's ``meta["import"]``): float32 ``x / scale``, clamped to
    ``[0, 2**bits - 1]``, rounded by the Quant's mode."""
    try:
        scale = np.float32(info["input_scale"])
        bits, rounding = int(info["input_bits"]), str(info.get("input_rounding", "ROUND"))
    except (KeyError, TypeError, ValueError):
        raise NmflowError("the hardware model's meta 'import' must hold input_scale and "
                          "input_bits (an imported model's)") from None
    if rounding not in _ROUNDING:
        raise NmflowError(f"input_rounding must be one of {', '.join(_ROUNDING)}, not "
                          f"{rounding!r}")
    y = (np.asarray(x, dtype=np.float32) / scale).astype(np.float32)
    return _ROUNDING[rounding](np.clip(y, 0, 2 ** bits - 1)).astype(np.int64)


def check_import(source, model, x):
    """The imported ``model`` against the graph on raw inputs ``x`` [N, inputs]: classes
    (argmax, lowest index on ties, both sides) with ``==``, and the graph's outputs against the
    graph's own last ops evaluated in float32 on the model's integer pre-activations: with
    ``==`` where the graph's last product is exact in float32 (every scale a power of two),
    within :data:`SCORE_RTOL` of the largest score otherwise. Returns the counts and the first
    image that differs."""
    from .reference import argmax_lowest, reference
    graph_model = _load(source)
    _, _, parts = _walk(_Graph(graph_model))
    last = parts[-1]
    ints = quantize_inputs(x, model.meta["import"])
    trace = reference(model, ints)
    out = execute(graph_model, x, 1.0)
    if last.int_tail is not None:               # integer scores: the engine's own
        classes = argmax_lowest(out)
        bad_class = np.flatnonzero(classes != trace.classes)
        bad_score = np.flatnonzero((out != trace.scores).any(axis=1))
        first = [int(i) for i in (bad_class[:1].tolist() + bad_score[:1].tolist())]
        return {"images": int(len(x)), "class_mismatches": int(len(bad_class)),
                "score_mismatches": int(len(bad_score)), "exact_scores_compared": True,
                "score_max_error": float(np.abs(out - trace.scores).max(initial=0)),
                "first_mismatch": min(first) if first else None,
                "onnx_classes": classes, "classes": trace.classes}
    gain = _slope(last.steps, last.weights.shape[0])[0] * last.k
    sign = 1 if model.meta["import"].get("exact_scores") else np.where(gain < 0, -1, 1)
    a = trace.preacts[-1] * sign
    expected = _apply(last.steps, (last.k * a).astype(np.float32))
    classes = argmax_lowest(out)
    bad_class = np.flatnonzero(classes != trace.classes)
    exact = bool(model.meta["import"].get("exact_products", [False])[-1])
    error = np.abs(out.astype(np.float64) - expected)
    if exact:
        bad_score = np.flatnonzero((out != expected).any(axis=1))
    else:
        # the graph's float32 product rounds (scales not powers of two): its outputs are
        # compared within that rounding
        allowed = SCORE_RTOL * (1 + np.abs(expected).max(axis=1, keepdims=True))
        bad_score = np.flatnonzero((error > allowed).any(axis=1))
    first = [int(i) for i in (bad_class[:1].tolist() + bad_score[:1].tolist())]
    return {"images": int(len(x)), "class_mismatches": int(len(bad_class)),
            "score_mismatches": int(len(bad_score)), "exact_scores_compared": exact,
            "score_max_error": float(error.max(initial=0.0)),
            "first_mismatch": min(first) if first else None,
            "onnx_classes": classes, "classes": trace.classes}


# -- export -------------------------------------------------------------------------------------

def to_qonnx(model, *, name="nmflow"):
    """The hardware model as a QONNX graph that qonnx (and FINN) read and execute.

    Input: float ``[1, inputs]`` (one image, as FINN takes it) holding the engine's integers, through a ``Quant`` (unsigned,
    ``input_bits``, scale 1). Each layer: ``MatMul`` with its weights through ``BipolarQuant``
    (binary) or a 2-bit narrow ``Quant`` (ternary), scale 1; a hidden layer's activation is a
    ``MultiThreshold`` on the integer pre-activation (``[t_hi]`` with out_scale 2 and out_bias -1
    for sign, ``[t_lo, t_hi]`` with out_scale 1 and out_bias -1 for ternary: the engine's rule at
    the thresholds, ``a >= t``); the last layer's scores are ``Cast`` to int64, times ``scale``
    plus ``offset`` in int64, exactly the engine's (float32 would round them above 2**24).
    Every value the float ops carry is an integer below 2**24: the execution is exact.
    Fully connected models only: a convolution is refused in one line."""
    if model.has_conv:
        raise NmflowError("format qonnx takes fully connected models only, not one with a "
                          "convolution: write it as format hwmodel")
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []

    def const(value, dtype, label):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), label))
        return label

    def node(op, inputs, label, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, [label], name=label, domain=domain, **attrs))
        return label

    domain = QONNX_DOMAINS[0]
    data = node("Quant", ["x", const(1.0, np.float32, "in_scale"), const(0.0, np.float32, "zero"),
                          const(float(model.input_bits), np.float32, "in_bits")], "in_quant",
                domain, signed=0, narrow=0, rounding_mode="ROUND")
    last = len(model.layers) - 1
    for index, layer in enumerate(model.layers):
        w = const(layer.weights.T.astype(np.float32), np.float32, f"w{index}")
        if model.weight_kind == "binary":
            wq = node("BipolarQuant", [w, const(1.0, np.float32, f"w{index}_scale")],
                      f"w{index}_quant", domain)
        else:
            wq = node("Quant", [w, const(1.0, np.float32, f"w{index}_scale"), "zero",
                                const(2.0, np.float32, f"w{index}_bits")], f"w{index}_quant",
                      domain, signed=1, narrow=1, rounding_mode="ROUND")
        data = node("MatMul", [data, wq], f"a{index}")
        if index < last:
            if layer.activation == "sign":
                thresholds, scale = layer.t_hi[:, None], 2.0
            else:
                thresholds, scale = np.stack([layer.t_lo, layer.t_hi], axis=1), 1.0
            data = node("MultiThreshold",
                        [data, const(thresholds.astype(np.float32), np.float32, f"t{index}")],
                        f"h{index}", domain, out_scale=scale, out_bias=-1.0,
                        out_dtype="BIPOLAR" if layer.activation == "sign" else "INT2",
                        data_layout="NC")
    data = node("Cast", [data], "a_int", to=TensorProto.INT64)
    data = node("Mul", [data, const(model.layers[-1].scale, np.int64, "score_scale")], "scaled")
    data = node("Add", [data, const(model.layers[-1].offset, np.int64, "score_offset")], "scores")
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                    [1, model.n_inputs])],
        [helper.make_tensor_value_info("scores", TensorProto.INT64, [1, model.n_classes])],
        inits)
    proto = helper.make_model(graph, producer_name="nmflow",
                              opset_imports=[helper.make_opsetid("", 13),
                                             helper.make_opsetid(domain, 1)])
    proto.ir_version = min(proto.ir_version, 10)
    return proto


def check_export(proto, model, x):
    """The QONNX graph of :func:`to_qonnx` executed by qonnx on integer inputs ``x`` against
    ``model``: every score (int64) and class with ``==``."""
    from .reference import argmax_lowest, reference
    trace = reference(model, x)
    out = execute(proto, x)
    if out.dtype != np.int64:
        raise NmflowError(f"the exported graph's scores must be int64, not {out.dtype}")
    bad = np.flatnonzero((out != trace.scores).any(axis=1)
                         | (argmax_lowest(out) != trace.classes))
    return {"images": int(len(x)), "mismatches": int(len(bad)),
            "first_mismatch": int(bad[0]) if len(bad) else None}
