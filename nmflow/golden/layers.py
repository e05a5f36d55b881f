"""Float training models for binarized (BNN) and ternary (TNN) networks, in PyTorch.

Each hidden weight ``W_h`` is a float that training moves; the forward pass uses its quantized
value, the backward pass hands the gradient of the quantized weight straight to ``W_h``
(straight-through estimator). Quantization is done by custom :class:`torch.autograd.Function`\\ s,
so the forward values are exactly -1, 0 or +1 (the ``w + (q - w).detach()`` trick can give
0.99999994 in float32).

The rules at zero are those of the hardware contract (:mod:`nmflow.golden.hwmodel`):

==================  ==============================================================================
binary weight       ``+1 if W_h >= 0 else -1``
ternary weight      ``sign(W_h) if |W_h| > delta else 0``
sign activation     ``+1 if y >= 0 else -1`` (``y == 0`` gives +1, unlike ``torch.sign``)
ternary activation  ``+1 if y > act_threshold``, ``-1 if y < -act_threshold``, else ``0``
==================  ==============================================================================

Activations pass the gradient where ``|y| <= 1`` and block it elsewhere; weights pass it unchanged.
"""

import functools

import numpy as np
import torch
from torch import nn

from ..errors import NmflowError, check_number

__all__ = ["flushing_denormals", "BinarizeWeight", "TernarizeWeight", "SignActivation",
           "TernaryActivation", "binarize", "ternarize", "sign_activation", "ternary_activation",
           "QuantLinear", "QuantConv2d", "QuantNet", "WEIGHT_KINDS", "ACTIVATIONS"]

WEIGHT_KINDS = ("binary", "ternary")
ACTIVATIONS = ("sign", "ternary")
#: Hidden weights start uniform in +-INIT_RANGE. With delta = 0.05 a ternary network started in
#: +-0.05 never trains: every weight quantizes to 0 and no gradient reaches the layers below.
INIT_RANGE = 0.1


class BinarizeWeight(torch.autograd.Function):
    """``+1 if w >= 0 else -1``; the gradient passes unchanged (straight through)."""

    @staticmethod
    def forward(ctx, w):
        return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))

    @staticmethod
    def backward(ctx, grad):
        return grad


class TernarizeWeight(torch.autograd.Function):
    """``sign(w) if |w| > delta else 0``; the gradient passes unchanged (straight through)."""

    @staticmethod
    def forward(ctx, w, delta):
        return torch.where(w.abs() > delta, torch.sign(w), torch.zeros_like(w))

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class SignActivation(torch.autograd.Function):
    """``+1 if y >= 0 else -1``; the gradient passes where ``|y| <= 1``."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return torch.where(y >= 0, torch.ones_like(y), -torch.ones_like(y))

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (y.abs() <= 1).to(grad.dtype)


class TernaryActivation(torch.autograd.Function):
    """``+1 if y > threshold``, ``-1 if y < -threshold``, else 0; the gradient passes where
    ``|y| <= 1``."""

    @staticmethod
    def forward(ctx, y, threshold):
        ctx.save_for_backward(y)
        ones = torch.ones_like(y)
        negative = torch.where(y < -threshold, -ones, torch.zeros_like(y))
        return torch.where(y > threshold, ones, negative)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (y.abs() <= 1).to(grad.dtype), None


def binarize(w):
    return BinarizeWeight.apply(w)


def ternarize(w, delta=0.05):
    return TernarizeWeight.apply(w, delta)


def sign_activation(y):
    return SignActivation.apply(y)


def ternary_activation(y, threshold=0.5):
    return TernaryActivation.apply(y, threshold)


def flushing_denormals(function):
    """Decorate ``function`` to run with denormal floats flushed to zero
    (``torch.set_flush_denormal(True)``; Adam's moments of always-zero pixels decay into
    denormals, which are slow on CPUs) and to restore the previous mode after it: the mode is
    global to the process, and other code (Hypothesis's float strategies) needs denormals."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        tiny = torch.tensor([1e-40], dtype=torch.float32)
        before = bool((tiny * 1.0).item() == 0.0)
        torch.set_flush_denormal(True)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_flush_denormal(before)
    return wrapper


class QuantLinear(nn.Module):
    """A linear layer without bias whose forward pass uses the quantized hidden weights.

    Parameters
    ----------
    n_in, n_out : int
    weight_kind : ``"binary"`` or ``"ternary"``
    delta : float
        Ternary weights: ``|W_h| <= delta`` gives 0 (unused for binary weights).

    Members
    -------
    weight : Parameter [n_out, n_in]
        The hidden (float) weights, initialised uniform in +-:data:`INIT_RANGE`.
    """

    def __init__(self, n_in, n_out, weight_kind="ternary", delta=0.05):
        super().__init__()
        self.weight_kind = weight_kind
        self.delta = float(delta)
        self.weight = nn.Parameter(torch.empty(n_out, n_in).uniform_(-INIT_RANGE, INIT_RANGE))

    def quantized_weight(self):
        """The weights the forward pass uses, values in {-1, 0, +1} (float tensor)."""
        if self.weight_kind == "binary":
            return binarize(self.weight)
        return ternarize(self.weight, self.delta)

    def forward(self, x):
        return nn.functional.linear(x, self.quantized_weight())

    def extra_repr(self):
        return (f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, "
                f"weight_kind={self.weight_kind!r}, delta={self.delta:g}")


class QuantConv2d(nn.Module):
    """A convolution without bias (stride 1, ``padding`` pixels of 0 around the map) whose forward
    pass uses the quantized hidden weights.

    Members
    -------
    weight : Parameter [out_channels, in_channels, kernel, kernel]
        The hidden (float) weights, initialised uniform in +-:data:`INIT_RANGE`.
    """

    def __init__(self, in_channels, out_channels, kernel, padding=0, weight_kind="ternary",
                 delta=0.05):
        super().__init__()
        self.weight_kind = weight_kind
        self.delta = float(delta)
        self.padding = int(padding)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel)
                                   .uniform_(-INIT_RANGE, INIT_RANGE))

    quantized_weight = QuantLinear.quantized_weight

    def forward(self, x):
        return nn.functional.conv2d(x, self.quantized_weight(), padding=self.padding)

    def extra_repr(self):
        out, channels, kernel, _ = self.weight.shape
        return (f"in={channels}, out={out}, kernel={kernel}, padding={self.padding}, "
                f"weight_kind={self.weight_kind!r}, delta={self.delta:g}")


class QuantNet(nn.Module):
    """A feed-forward BNN or TNN: ``QuantLinear -> BatchNorm1d [-> activation]`` per layer, or,
    from a layer string (:mod:`nmflow.golden.arch`), convolutions first:
    ``QuantConv2d -> BatchNorm2d -> activation [-> max pooling]``.

    Every layer is followed by a BatchNorm (its running statistics are what the export folds into
    integer thresholds); every hidden BatchNorm is followed by the activation; the last layer has
    none, its BatchNorm outputs are the logits. The first layer reads the integer inputs as floats
    (pixels 0 to 16 for digits), not binarized. A convolutional network reads its inputs in the
    dataset's order (channel, row, column) and pools the quantized activations (the maximum of
    values in {-1, 0, +1}); its activations are traced, and its weights given, in the hardware's
    order: maps pixel by pixel, channels innermost, and a convolution's weight row ordered by
    kernel row, kernel column, then input channel.

    Parameters
    ----------
    sizes : sequence of int
        Neurons per layer, inputs first and classes last (for example ``(64, 128, 128, 10)``);
        at least two entries, each positive. With ``arch``, the inputs then each layer's
        output channels or neurons (derived when omitted).
    weight_kind : ``"ternary"`` or ``"binary"``
    activation : ``"ternary"`` or ``"sign"``
    delta : float
        Ternary weight dead zone, ``>= 0``.
    act_threshold : float
        Ternary activation dead zone on the BatchNorm output, ``>= 0``.
    arch : str, optional
        A layer string (``"c16k3-p2-f64-f10"``); with it, ``in_shape``.
    in_shape : (channels, height, width), optional
        The images' geometry (:attr:`nmflow.golden.datasets.Dataset.shape`).
    """

    def __init__(self, sizes=None, weight_kind="ternary", activation="ternary", delta=0.05,
                 act_threshold=0.5, arch=None, in_shape=None):
        super().__init__()
        self.arch, self.in_shape, self.geometry = None, None, None
        if arch is not None:
            sizes = self._conv_sizes(arch, in_shape, sizes)
        if not isinstance(sizes, (list, tuple)) or len(sizes) < 2 or any(
                isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                for n in sizes):
            raise NmflowError(f"sizes must be a list of at least two positive integers, "
                              f"not {sizes!r}")
        sizes = [int(n) for n in sizes]
        if weight_kind not in WEIGHT_KINDS:
            raise NmflowError(f"weight_kind must be one of {', '.join(WEIGHT_KINDS)}, "
                              f"not {weight_kind!r}")
        if activation not in ACTIVATIONS:
            raise NmflowError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                              f"not {activation!r}")
        check_number("delta", delta, 0.0)
        check_number("act_threshold", act_threshold, 0.0)
        self.sizes = sizes
        self.weight_kind = weight_kind
        self.activation = activation
        self.delta = float(delta)
        self.act_threshold = float(act_threshold)
        if self.geometry is None:
            self.linears = nn.ModuleList(QuantLinear(n_in, n_out, weight_kind, delta)
                                         for n_in, n_out in zip(sizes[:-1], sizes[1:]))
            self.norms = nn.ModuleList(nn.BatchNorm1d(n_out) for n_out in sizes[1:])
        else:
            self.linears = nn.ModuleList(
                QuantConv2d(g.in_shape[0], g.n_out, g.kernel, g.padding, weight_kind, delta)
                if g.kind == "conv" else QuantLinear(g.n_in, g.n_out, weight_kind, delta)
                for g in self.geometry)
            self.norms = nn.ModuleList(nn.BatchNorm2d(g.n_out) if g.kind == "conv"
                                       else nn.BatchNorm1d(g.n_out) for g in self.geometry)

    def _conv_sizes(self, arch, in_shape, sizes):
        """Parse ``arch`` on ``in_shape``; the sizes it gives (checked against ``sizes``)."""
        from .arch import arch_text, geometry, parse_arch
        if (not isinstance(in_shape, (list, tuple)) or len(in_shape) != 3
                or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                       for v in in_shape)):
            raise NmflowError(f"in_shape must be (channels, height, width) of positive integers "
                              f"for a layer string, not {in_shape!r}")
        layers = parse_arch(arch)
        self.arch, self.in_shape = arch_text(layers), tuple(int(v) for v in in_shape)
        self.geometry = geometry(layers, self.in_shape)
        derived = [int(np.prod(self.in_shape))] + [g.n_out for g in self.geometry]
        if sizes is not None and list(sizes) != derived:
            raise NmflowError(f"sizes must be {derived} for arch {self.arch!r} on "
                              f"{list(self.in_shape)}, not {list(sizes)!r}")
        return derived

    def activate(self, y):
        """The hidden activation applied to BatchNorm outputs ``y``."""
        if self.activation == "sign":
            return sign_activation(y)
        return ternary_activation(y, self.act_threshold)

    def _layer(self, index, h):
        """Layer ``index`` on ``h`` (maps [N, C, H, W] before the first fully connected layer,
        [N, features] after): its BatchNorm output, activated and pooled unless it is the last."""
        linear, norm = self.linears[index], self.norms[index]
        g = None if self.geometry is None else self.geometry[index]
        if g is not None and g.kind == "dense" and h.dim() == 4:
            h = h.flatten(1)                     # the map, channel by channel (PyTorch's order)
        h = norm(linear(h))
        if index < len(self.linears) - 1:
            h = self.activate(h)
            if g is not None and g.pool > 1:
                h = nn.functional.max_pool2d(h, g.pool)
        return h

    def _maps(self, x):
        h = x
        if self.geometry is not None and self.geometry[0].kind == "conv":
            h = h.reshape(len(h), *self.in_shape)
        return h

    def forward(self, x):
        """Logits [N, classes] of float inputs ``x`` [N, sizes[0]]."""
        h = self._maps(x)
        for index in range(len(self.linears)):
            h = self._layer(index, h)
        return h

    @torch.no_grad()
    def trace(self, x):
        """Run in eval mode (running BatchNorm statistics) without gradients.

        Parameters
        ----------
        x : array-like [N, sizes[0]]
            Integer or float inputs.

        Returns
        -------
        acts : list of float tensors [N, outputs], one per hidden layer, values in {-1, 0, +1}
            (a convolution's pooled map pixel by pixel, channels innermost)
        logits : float tensor [N, classes]
        """
        was_training = self.training
        self.eval()
        try:
            h = self._maps(torch.as_tensor(x).to(torch.float32))
            acts = []
            for index in range(len(self.linears)):
                h = self._layer(index, h)
                if index < len(self.linears) - 1:
                    acts.append(h.permute(0, 2, 3, 1).flatten(1) if h.dim() == 4 else h)
            return acts, h
        finally:
            self.train(was_training)

    def quantized_weights(self):
        """The quantized weights of every layer as float matrices [out, in] with values in
        {-1, 0, +1}, columns in the hardware's order: a convolution's row by kernel row, kernel
        column, then input channel; a fully connected layer behind a map by pixel, channels
        innermost."""
        with torch.no_grad():
            out = []
            for index, linear in enumerate(self.linears):
                w = linear.quantized_weight()
                g = None if self.geometry is None else self.geometry[index]
                if g is not None and g.kind == "conv":
                    w = w.permute(0, 2, 3, 1).reshape(len(w), -1)
                elif g is not None and index > 0 and self.geometry[index - 1].kind == "conv":
                    channels, height, width = self.geometry[index - 1].out_shape
                    w = w.reshape(len(w), channels, height, width).permute(0, 2, 3, 1)
                    w = w.reshape(len(w), -1)
                out.append(w)
            return out

    def describe(self):
        """A JSON-serialisable description of the architecture (enough to rebuild it)."""
        out = {"sizes": list(self.sizes), "weight_kind": self.weight_kind,
               "activation": self.activation, "delta": self.delta,
               "act_threshold": self.act_threshold}
        if self.arch is not None:
            out.update(arch=self.arch, in_shape=list(self.in_shape))
        return out
