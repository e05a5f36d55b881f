"""The integer hardware model: the contract between ``golden/`` and ``rtl/`` (docs/contracts.md, contract 1).

A hardware model is what the engine computes, stated in integers only.

Inputs
    Unsigned integers of ``input_bits`` bits (1 to 8), one per input neuron.
Layers
    Each layer has int8 weights in {-1, 0, +1} of shape ``[out, in]`` (binary models use only -1
    and +1) and computes the integer pre-activation ``a[j] = sum_i w[j, i] * x[i]``.
Activations (the rule at zero is part of the contract)
    ``sign``     ``+1 if a >= t_hi[j] else -1``. A pre-activation exactly at the threshold gives +1;
                 a sign activation never produces 0.
    ``ternary``  ``+1 if a >= t_hi[j]``, ``-1 if a < t_lo[j]``, ``0`` otherwise, with
                 ``t_lo[j] <= t_hi[j]``.
    ``none``     last layer only: the integer score ``s[j] = scale[j] * a[j] + offset[j]``; the class
                 is the argmax of the scores, the lowest index on ties.

Convolutions (version 3)
    A layer may be a convolution: its weights ``[out_channels, kernel * kernel * in_channels]``
    are applied at every pixel of its input map (stride 1, ``padding`` pixels of 0 around it),
    each row ordered by kernel row, kernel column, then input channel; its thresholds are per
    output channel; a ``pool`` of ``s > 1`` then keeps the maximum of the activations over
    ``s x s`` windows (stride ``s``; the last row and column of an odd side are dropped). Maps
    pass from layer to layer pixel by pixel (row by row), channels innermost; the next layer is
    a convolution on that map or a fully connected layer reading it flattened in that order.
    The model's inputs stay in the dataset's order: channel by channel, then row by row (the
    first convolution's ``in_shape`` says how many of each). The last layer is fully connected.
    A model with a convolution is written as version 3; one without stays version 2.

Weights at zero: a binary hidden weight ``W_h >= 0`` is +1, ``W_h < 0`` is -1; a ternary hidden
weight with ``|W_h| <= delta`` is 0 (see :mod:`nmflow.golden.layers`).

On disk a model is two files with one stem: ``<stem>.npz`` (the arrays) and ``<stem>.json``
(schema, version, sizes, rules, provenance and the SHA-256 of the arrays). :func:`load` checks all
of it and refuses a truncated, tampered or foreign file with one line naming what is wrong.
"""

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NmflowError, check_choice
from ..fileio import UNREADABLE, staged_outputs, write_bytes, write_json

__all__ = ["Layer", "HardwareModel", "save", "load", "checksum", "model_checksum", "header_fields",
           "preact_bound", "SCHEMA", "VERSION", "COVERED", "ACTIVATIONS"]

SCHEMA = "nmflow.hwmodel"
#: Version 2: the checksum covers the header fields the hardware is built from (version 1 covered
#: the arrays only). Version 3: layers may be convolutions (their geometry in the header, which
#: the checksum covers); a model without one is still written, and read, as version 2.
VERSION = 2
CONV_VERSION = 3
VERSIONS = (VERSION, CONV_VERSION)
#: The geometry of a convolution layer, as stored.
CONV_KEYS = ("in_shape", "kernel", "padding", "pool")
#: The header fields the checksum covers besides the arrays (docs/contracts.md, section 1.5).
COVERED = ("schema", "version", "input_bits", "weight_kind", "sizes", "layers",
           "score_frac_bits", "score_bits")
ACTIVATIONS = ("sign", "ternary", "none")
WEIGHT_KINDS = ("binary", "ternary")
#: Bounds on the last layer's fixed-point affine (fits the 16x16 DSP multipliers of iCE40 and ECP5).
SCALE_LIMIT = 1 << 15
OFFSET_LIMIT = 1 << 31

ZERO_RULE = ("sign: +1 if a >= t_hi else -1 (a at the threshold gives +1, never 0); "
             "ternary: +1 if a >= t_hi, -1 if a < t_lo, else 0; "
             "scores: scale * a + offset, class = argmax with the lowest index on ties")


def preact_bound(weights, input_bits, index):
    """Largest ``|a|`` that layer ``index`` with ``weights`` can produce on any legal input: the
    one place the pre-activation bound is computed (the plan's widths, the loader's threshold
    bounds and export's thresholds all start from it)."""
    top = (1 << input_bits) - 1 if index == 0 else 1
    return int(np.abs(np.asarray(weights, dtype=np.int64)).sum(axis=1).max(initial=0)) * top


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of a hardware model.

    Members
    -------
    weights : int8 ndarray [out, in], values in {-1, 0, +1}
    activation : ``"sign"``, ``"ternary"`` or ``"none"`` (last layer only)
    t_hi, t_lo : int64 ndarray [out] or None (``t_lo`` only for ternary)
    scale, offset : int64 ndarray [out] or None (last layer only)
    conv : dict or None
        A convolution's geometry: ``in_shape`` [channels, height, width] of the map it reads,
        ``kernel``, ``padding`` and ``pool`` (1 for none); None for a fully connected layer.
    """
    weights: np.ndarray
    activation: str
    t_hi: np.ndarray | None = None
    t_lo: np.ndarray | None = None
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    conv: dict | None = None

    @property
    def n_in(self):
        return self.weights.shape[1]

    @property
    def n_out(self):
        return self.weights.shape[0]

    @property
    def conv_shape(self):
        """A convolution's output map before pooling, (channels, height, width)."""
        channels, height, width = self.conv["in_shape"]
        k, p = self.conv["kernel"], self.conv["padding"]
        return self.n_out, height + 2 * p - k + 1, width + 2 * p - k + 1

    @property
    def out_shape(self):
        """The map the layer hands on, (channels, height, width): after pooling for a
        convolution, (neurons, 1, 1) for a fully connected layer."""
        if self.conv is None:
            return self.n_out, 1, 1
        channels, height, width = self.conv_shape
        pool = self.conv["pool"]
        return channels, height // pool, width // pool

    @property
    def n_outputs(self):
        """Activations the layer hands on."""
        channels, height, width = self.out_shape
        return channels * height * width


@dataclass(frozen=True, eq=False)
class HardwareModel:
    """An integer network: what the engine computes, bit for bit.

    Members
    -------
    input_bits : int
        Width of the unsigned inputs of the first layer (1 to 8).
    weight_kind : ``"binary"`` or ``"ternary"``
    layers : tuple of :class:`Layer`
    score_frac_bits : int
        Fraction bits of the last layer's ``scale``/``offset`` (informational: the class does not
        depend on it).
    meta : dict
        Provenance (dataset, accuracies, training configuration); not read by the hardware.
    """
    input_bits: int
    weight_kind: str
    layers: tuple
    score_frac_bits: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        validate(self)

    @property
    def n_inputs(self):
        first = self.layers[0]
        return first.n_in if first.conv is None else int(np.prod(first.conv["in_shape"]))

    @property
    def has_conv(self):
        """Whether a layer is a convolution."""
        return any(layer.conv is not None for layer in self.layers)

    @property
    def n_classes(self):
        return self.layers[-1].n_out

    @property
    def sizes(self):
        return [self.n_inputs] + [layer.n_out for layer in self.layers]

    def input_bound(self, index):
        """Largest magnitude of an input to layer ``index``."""
        return (1 << self.input_bits) - 1 if index == 0 else 1

    def preact_bound(self, index):
        """Largest ``|a|`` that layer ``index`` can produce on any legal input."""
        return preact_bound(self.layers[index].weights, self.input_bits, index)

    @property
    def score_bound(self):
        """Largest ``|score|`` on any legal input."""
        last = self.layers[-1]
        bound = self.preact_bound(len(self.layers) - 1)
        return int((np.abs(last.scale) * bound + np.abs(last.offset)).max(initial=0))

    @property
    def score_bits(self):
        """Width of a signed integer that holds every score."""
        return self.score_bound.bit_length() + 1

    def arrays(self):
        """The arrays as stored on disk, by name."""
        out = {}
        for index, layer in enumerate(self.layers):
            out[f"w{index}"] = layer.weights
            for name in ("t_hi", "t_lo", "scale", "offset"):
                value = getattr(layer, name)
                if value is not None:
                    out[f"{name}{index}"] = value
        return out


def _fail(message):
    raise NmflowError(message)


def _check_conv(name, layer, previous, last):
    """A convolution's geometry: known keys, integers in range, a map that does not vanish,
    the input map the previous layer hands on, and a weight row per kernel window."""
    from .arch import MAX_KERNEL, MAX_POOL
    conv = layer.conv
    if not isinstance(conv, dict) or sorted(conv) != sorted(CONV_KEYS):
        _fail(f"{name} conv must be a dict of {', '.join(CONV_KEYS)}, not {conv!r}")
    if last:
        _fail(f"{name} must be fully connected (the last layer gives scores), not a convolution")
    shape = conv["in_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)):
        _fail(f"{name} conv in_shape must be [channels, height, width] of positive integers, "
              f"not {shape!r}")
    for key, low, high in (("kernel", 1, MAX_KERNEL), ("pool", 1, MAX_POOL)):
        value = conv[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _fail(f"{name} conv {key} must be an integer from {low} to {high}, not {value!r}")
    pad = conv["padding"]
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < conv["kernel"]:
        _fail(f"{name} conv padding must be an integer from 0 to kernel - 1 = "
              f"{conv['kernel'] - 1}, not {pad!r}")
    channels, height, width = layer.out_shape
    if min(layer.conv_shape[1:]) < 1 or height < 1 or width < 1:
        _fail(f"{name} conv map must not vanish: a {conv['kernel']} x {conv['kernel']} kernel "
              f"(padding {pad}, pool {conv['pool']}) on {list(shape)}")
    if previous is not None and tuple(previous) != tuple(shape):
        _fail(f"{name} conv in_shape must be {list(previous)} (the map the previous layer hands "
              f"on), not {list(shape)}")
    if layer.n_in != conv["kernel"] ** 2 * shape[0]:
        _fail(f"{name} weights must have kernel * kernel * channels = "
              f"{conv['kernel'] ** 2 * shape[0]} inputs, not {layer.n_in}")


def validate(model):
    """Check every rule of contract 1; raise :class:`NmflowError` on the first one broken."""
    if not isinstance(model.input_bits, int) or not 1 <= model.input_bits <= 8:
        _fail(f"input_bits must be an integer from 1 to 8, not {model.input_bits!r}")
    check_choice("weight_kind", model.weight_kind, WEIGHT_KINDS)
    if len(model.layers) < 1:
        _fail("layers must hold at least one layer, not 0")
    previous = None
    for index, layer in enumerate(model.layers):
        name = f"layer {index}"
        w = layer.weights
        if not isinstance(w, np.ndarray) or w.ndim != 2 or w.dtype != np.int8:
            _fail(f"{name} weights must be a 2-D int8 array, not {getattr(w, 'dtype', type(w))!s} "
                  f"of shape {getattr(w, 'shape', None)}")
        if w.shape[0] < 1 or w.shape[1] < 1:
            _fail(f"{name} weights must have at least one row and one column, not shape {w.shape}")
        if layer.conv is not None:
            _check_conv(name, layer, previous, index == len(model.layers) - 1)
        elif previous is not None and w.shape[1] != int(np.prod(previous)):
            _fail(f"{name} weights must have {int(np.prod(previous))} inputs (the previous "
                  f"layer's outputs), not {w.shape[1]}")
        previous = layer.out_shape
        allowed = (-1, 1) if model.weight_kind == "binary" else (-1, 0, 1)
        bad = ~np.isin(w, allowed)
        if bad.any():
            value = int(w[bad][0])
            _fail(f"{name} weights of a {model.weight_kind} model must be in "
                  f"{{{', '.join(f'{v:+d}' for v in allowed)}}}, not {value}")
        last = index == len(model.layers) - 1
        expected = "none" if last else ("sign", "ternary")
        if last and layer.activation != "none":
            _fail(f"{name} activation must be 'none' (the last layer gives scores), "
                  f"not {layer.activation!r}")
        if not last and layer.activation not in expected:
            _fail(f"{name} activation must be 'sign' or 'ternary', not {layer.activation!r}")
        bound = preact_bound(w, model.input_bits, index)
        needed = {"sign": ("t_hi",), "ternary": ("t_hi", "t_lo"), "none": ("scale", "offset")}
        for member in ("t_hi", "t_lo", "scale", "offset"):
            value = getattr(layer, member)
            if member not in needed[layer.activation]:
                if value is not None:
                    _fail(f"{name} {member} must be absent for a {layer.activation!r} activation")
                continue
            if (not isinstance(value, np.ndarray) or value.dtype != np.int64
                    or value.shape != (w.shape[0],)):
                _fail(f"{name} {member} must be an int64 array of shape ({w.shape[0]},), not "
                      f"{getattr(value, 'dtype', type(value))!s} of shape "
                      f"{getattr(value, 'shape', None)}")
            if member in ("t_hi", "t_lo"):
                limit = bound + 1
                out = np.abs(value) > limit
                if out.any():
                    _fail(f"{name} {member} must lie within +-{limit} (the pre-activation bound "
                          f"plus one), not {int(value[out][0])}")
            elif member == "scale":
                out = np.abs(value) >= SCALE_LIMIT
                if out.any():
                    _fail(f"{name} scale must lie strictly within +-{SCALE_LIMIT}, "
                          f"not {int(value[out][0])}")
            else:
                out = np.abs(value) >= OFFSET_LIMIT
                if out.any():
                    _fail(f"{name} offset must lie strictly within +-{OFFSET_LIMIT}, "
                          f"not {int(value[out][0])}")
        if layer.activation == "ternary":
            inverted = layer.t_lo > layer.t_hi
            if inverted.any():
                j = int(np.flatnonzero(inverted)[0])
                _fail(f"{name} thresholds must satisfy t_lo <= t_hi, not t_lo={int(layer.t_lo[j])} "
                      f"> t_hi={int(layer.t_hi[j])} at neuron {j}")
    if not isinstance(model.score_frac_bits, int) or not 0 <= model.score_frac_bits <= 40:
        _fail(f"score_frac_bits must be an integer from 0 to 40, not {model.score_frac_bits!r}")


def header_fields(model):
    """The header fields of ``model`` that the checksum covers, as stored."""
    layers = []
    for layer in model.layers:
        spec = {"in": layer.n_in, "out": layer.n_out, "activation": layer.activation}
        if layer.conv is not None:
            spec["conv"] = {key: list(value) if key == "in_shape" else value
                            for key, value in layer.conv.items()}
        layers.append(spec)
    return {
        "schema": SCHEMA,
        "version": CONV_VERSION if model.has_conv else VERSION,
        "input_bits": model.input_bits,
        "weight_kind": model.weight_kind,
        "sizes": model.sizes,
        "layers": layers,
        "score_frac_bits": model.score_frac_bits,
        "score_bits": model.score_bits,
    }


def checksum(fields, arrays):
    """SHA-256 over the covered header fields (canonical JSON) and then every array's name,
    dtype, shape and bytes, in name order (docs/contracts.md, section 1.5)."""
    digest = hashlib.sha256()
    covered = {key: fields.get(key) for key in COVERED}
    digest.update(json.dumps(covered, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=True).encode("ascii"))
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def model_checksum(model):
    """The checksum of ``model`` as :func:`save` writes it: what identifies a hardware model."""
    return checksum(header_fields(model), model.arrays())


def _paths(path):
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def save(model, path):
    """Write ``<stem>.npz`` and ``<stem>.json``, both or neither; return the two paths."""
    npz_path, json_path = _paths(path)
    arrays = model.arrays()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fields = header_fields(model)
    header = dict(fields, **{
        "rules": ZERO_RULE,
        "arrays": {name: {"dtype": value.dtype.name, "shape": list(value.shape)}
                   for name, value in sorted(arrays.items())},
        "sha256": checksum(fields, arrays),
        "meta": model.meta,
    })
    with staged_outputs() as outputs:
        write_bytes(outputs.file(npz_path), buffer.getvalue())
        write_json(outputs.file(json_path), header)
    return npz_path, json_path


def load(path):
    """Read and check a hardware model; raise :class:`NmflowError` with one line if it is bad."""
    npz_path, json_path = _paths(path)
    for p in (json_path, npz_path):
        if p.is_dir():
            _fail(f"hardware model file {str(p)!r} is a directory, not a file")
        if not p.is_file():
            _fail(f"hardware model file {str(p)!r} does not exist")
    try:
        header = json.loads(json_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        _fail(f"hardware model header {str(json_path)!r} is not valid JSON ({error})")
    except RecursionError:
        _fail(f"hardware model header {str(json_path)!r} is nested too deeply to be a header")
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        found = header.get("schema") if isinstance(header, dict) else type(header).__name__
        _fail(f"hardware model header {str(json_path)!r} must have schema {SCHEMA!r}, not {found!r}")
    if header.get("version") not in VERSIONS:
        _fail(f"hardware model version must be {' or '.join(map(str, VERSIONS))}, not "
              f"{header.get('version')!r} (in {str(json_path)!r})")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except UNREADABLE as error:
        _fail(f"hardware model arrays {str(npz_path)!r} are unreadable (truncated or not an npz "
              f"file: {error})")
    listed = header.get("arrays")
    if not isinstance(listed, dict) or sorted(listed) != sorted(arrays):
        _fail(f"hardware model arrays {str(npz_path)!r} must be exactly those listed in the header, "
              f"not {sorted(arrays)}")
    for name, spec in listed.items():
        value = arrays[name]
        if not isinstance(spec, dict) or spec.get("dtype") != value.dtype.name \
                or spec.get("shape") != list(value.shape):
            _fail(f"hardware model array {name!r} must be {spec!r} as the header says, not "
                  f"{value.dtype.name} of shape {list(value.shape)}")
    if header.get("sha256") != checksum(header, arrays):
        _fail(f"hardware model checksum mismatch: {str(npz_path)!r} does not match the sha256 in "
              f"{str(json_path)!r} (file changed or tampered)")
    layers_spec = header.get("layers")
    if not isinstance(layers_spec, list) or not layers_spec:
        _fail(f"hardware model header layers must be a non-empty list, not {layers_spec!r}")
    layers = []
    for index, spec in enumerate(layers_spec):
        if f"w{index}" not in arrays or not isinstance(spec, dict):
            _fail(f"hardware model layer {index} has no weights array 'w{index}'")
        members = {m: arrays.get(f"{m}{index}") for m in ("t_hi", "t_lo", "scale", "offset")}
        conv = spec.get("conv")
        if conv is not None and header.get("version") != CONV_VERSION:
            _fail(f"hardware model layer {index} is a convolution, which version "
                  f"{header.get('version')!r} does not have (version {CONV_VERSION} does)")
        layers.append(Layer(arrays[f"w{index}"], spec.get("activation"), **members, conv=conv))
        if [layers[-1].n_in, layers[-1].n_out] != [spec.get("in"), spec.get("out")]:
            _fail(f"hardware model layer {index} must be {spec.get('in')}x{spec.get('out')} as the "
                  f"header says, not {layers[-1].n_in}x{layers[-1].n_out}")
    meta = header.get("meta")
    if meta is not None and not isinstance(meta, dict):
        _fail(f"hardware model header meta must be an object, not {type(meta).__name__}")
    model = HardwareModel(input_bits=header.get("input_bits"),
                          weight_kind=header.get("weight_kind"), layers=layers,
                          score_frac_bits=header.get("score_frac_bits", 0), meta=meta or {})
    if header.get("version") != (CONV_VERSION if model.has_conv else VERSION):
        _fail(f"hardware model version must be {VERSION} for a model without a convolution, "
              f"not {header.get('version')!r} (in {str(json_path)!r})")
    for name in ("sizes", "score_bits"):
        if header.get(name) != getattr(model, name):
            _fail(f"hardware model header {name} must be {getattr(model, name)!r} (what the "
                  f"arrays give), not {header.get(name)!r}")
    return model
