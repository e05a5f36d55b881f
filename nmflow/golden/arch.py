"""Network architectures as short layer strings, and the geometry they give an image.

A network is a string of layers separated by ``-``, read from the input to the classes:

============  =====================================================================================
``c16k3``     a convolution: 16 output channels, a 3 x 3 kernel, stride 1, no padding
``c16k3p1``   the same with 1 pixel of padding on every side (padding reads 0: see below)
``p2``        max pooling of the activations over 2 x 2 windows, stride 2 (a map whose side is
              odd loses its last row and column, as PyTorch's ``max_pool2d`` does)
``f64``       a fully connected layer of 64 neurons; the last layer is one, with one neuron per
              class
============  =====================================================================================

Convolutions and poolings come first (a pooling right after a convolution or another pooling),
then the fully connected layers; the first fully connected layer reads the last map flattened.
For example ``c16k3-p2-c32k3-p2-f64-f10``. Every layer but the last is followed by BatchNorm and
the activation (sign or ternary); a pooling takes the maximum of the quantized activations, so
that folding BatchNorm into thresholds stays exact. Padding reads 0: for a ternary activation a
value it can take, for a sign activation a third value that contributes nothing to a sum (the
GXNOR of a weight and 0 is 0), and for the inputs the darkest pixel.
"""

import re
from dataclasses import dataclass

from ..errors import NmflowError

__all__ = ["Conv", "Pool", "Dense", "parse_arch", "Geometry", "geometry", "arch_text",
           "MAX_CHANNELS", "MAX_KERNEL", "MAX_POOL", "MAX_UNITS", "MAX_ARCH_LAYERS"]

#: Most output channels of a convolution.
MAX_CHANNELS = 1024
#: Largest kernel side.
MAX_KERNEL = 11
#: Largest pooling window side.
MAX_POOL = 8
#: Most neurons of a fully connected layer (the hidden-width bound of ``nmflow.limits``).
MAX_UNITS = 65_536
#: Most layers in one string.
MAX_ARCH_LAYERS = 32


@dataclass(frozen=True)
class Conv:
    """A convolution: ``channels`` outputs, a ``kernel`` x ``kernel`` window, stride 1, and
    ``padding`` pixels of 0 on every side."""
    channels: int
    kernel: int
    padding: int = 0

    def text(self):
        return f"c{self.channels}k{self.kernel}" + (f"p{self.padding}" if self.padding else "")


@dataclass(frozen=True)
class Pool:
    """Max pooling over ``size`` x ``size`` windows, stride ``size``."""
    size: int

    def text(self):
        return f"p{self.size}"


@dataclass(frozen=True)
class Dense:
    """A fully connected layer of ``units`` neurons."""
    units: int

    def text(self):
        return f"f{self.units}"


_TOKEN = re.compile(r"c(\d+)k(\d+)(?:p(\d+))?|p(\d+)|f(\d+)")


def _bounded(token, what, value, low, high):
    if not low <= value <= high:
        raise NmflowError(f"arch layer {token!r}: {what} must be from {low} to {high}, "
                          f"not {value}")
    return value


def parse_arch(text):
    """The layers of a layer string (see the module docstring), checked; one line naming the
    layer, the rule and the bad value otherwise.

    Returns
    -------
    tuple of :class:`Conv`, :class:`Pool` and :class:`Dense`
    """
    if not isinstance(text, str) or not text.strip():
        raise NmflowError(f"arch must be a layer string such as 'c16k3-p2-f64-f10', not {text!r}")
    tokens = text.strip().split("-")
    if len(tokens) > MAX_ARCH_LAYERS:
        raise NmflowError(f"arch must have at most {MAX_ARCH_LAYERS} layers, not {len(tokens)}")
    layers = []
    for token in tokens:
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise NmflowError(f"arch layer {token!r} must be c<channels>k<kernel>[p<padding>], "
                              f"p<pool> or f<units> (for example c16k3, c16k3p1, p2, f64)")
        conv_c, conv_k, conv_p, pool, units = match.groups()
        if conv_c is not None:
            kernel = _bounded(token, "the kernel", int(conv_k), 1, MAX_KERNEL)
            layer = Conv(_bounded(token, "the channels", int(conv_c), 1, MAX_CHANNELS), kernel,
                         _bounded(token, "the padding", int(conv_p or 0), 0, kernel - 1))
        elif pool is not None:
            layer = Pool(_bounded(token, "the pooling window", int(pool), 2, MAX_POOL))
            if not layers or isinstance(layers[-1], Dense):
                raise NmflowError(f"arch layer {token!r}: a pooling must follow a convolution "
                                  f"or a pooling")
        else:
            layer = Dense(_bounded(token, "the units", int(units), 1, MAX_UNITS))
        if layers and isinstance(layers[-1], Dense) and not isinstance(layer, Dense):
            raise NmflowError(f"arch layer {token!r}: convolutions and poolings come before "
                              f"the fully connected layers")
        layers.append(layer)
    if not isinstance(layers[-1], Dense):
        raise NmflowError(f"arch must end with a fully connected layer of one neuron per class "
                          f"(f<classes>), not {tokens[-1]!r}")
    return tuple(layers)


def arch_text(layers):
    """The layer string of ``layers`` (the inverse of :func:`parse_arch`)."""
    return "-".join(layer.text() for layer in layers)


@dataclass(frozen=True)
class Geometry:
    """What one weight layer (a convolution, with the poolings right behind it, or a fully
    connected layer) computes on an image.

    Members
    -------
    kind : ``"conv"`` or ``"dense"``
    in_shape : (channels, height, width) of its input map; (features, 1, 1) for a fully
        connected layer
    n_in, n_out : the weight matrix's columns (``kernel * kernel * channels`` for a convolution)
        and rows (output channels or neurons)
    kernel, padding : of a convolution (1 and 0 for a fully connected layer)
    conv_shape : (channels, height, width) of the convolution's output, before pooling
    pool : the pooling window behind it, 1 for none (two poolings in a row multiply)
    out_shape : (channels, height, width) after pooling
    """
    kind: str
    in_shape: tuple
    n_in: int
    n_out: int
    kernel: int = 1
    padding: int = 0
    conv_shape: tuple = ()
    pool: int = 1
    out_shape: tuple = ()

    @property
    def n_outputs(self):
        """Activations the layer hands on: the pooled map's size, or its neurons."""
        c, h, w = self.out_shape
        return c * h * w


def geometry(layers, in_shape):
    """The :class:`Geometry` of every weight layer of ``layers`` on images of ``in_shape``
    (channels, height, width); one line naming the layer when a map would vanish.

    Poolings fold into the convolution before them; a pooling window of ``s`` keeps
    ``floor(side / s)`` of a side (two poolings of 2 are one of 4).
    """
    channels, height, width = (int(v) for v in in_shape)
    out = []
    for layer in layers:
        if isinstance(layer, Conv):
            k, p = layer.kernel, layer.padding
            h_out, w_out = height + 2 * p - k + 1, width + 2 * p - k + 1
            if h_out < 1 or w_out < 1:
                raise NmflowError(f"arch layer {layer.text()!r}: a {k} x {k} kernel with padding "
                                  f"{p} must fit the {height} x {width} map it reads")
            shape = (layer.channels, h_out, w_out)
            out.append(Geometry("conv", (channels, height, width), k * k * channels,
                                layer.channels, k, p, shape, 1, shape))
            channels, height, width = shape
        elif isinstance(layer, Pool):
            if height // layer.size < 1 or width // layer.size < 1:
                raise NmflowError(f"arch layer {layer.text()!r}: a {layer.size} x {layer.size} "
                                  f"pooling must fit the {height} x {width} map it reads")
            height, width = height // layer.size, width // layer.size
            last = out[-1]
            out[-1] = Geometry(last.kind, last.in_shape, last.n_in, last.n_out, last.kernel,
                               last.padding, last.conv_shape, last.pool * layer.size,
                               (channels, height, width))
        else:
            n_in = channels * height * width
            out.append(Geometry("dense", (n_in, 1, 1), n_in, layer.units,
                                conv_shape=(layer.units, 1, 1), out_shape=(layer.units, 1, 1)))
            channels, height, width = layer.units, 1, 1
    return out
