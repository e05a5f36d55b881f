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
           "QuantLinear", "QuantNet", "WEIGHT_KINDS", "ACTIVATIONS"]

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


class QuantNet(nn.Module):
    """A feed-forward BNN or TNN: ``QuantLinear -> BatchNorm1d [-> activation]`` per layer.

    Every layer is followed by a BatchNorm (its running statistics are what the export folds into
    integer thresholds); every hidden BatchNorm is followed by the activation; the last layer has
    none, its BatchNorm outputs are the logits. The first layer reads the integer inputs as floats
    (pixels 0 to 16 for digits), not binarized.

    Parameters
    ----------
    sizes : sequence of int
        Neurons per layer, inputs first and classes last (for example ``(64, 128, 128, 10)``);
        at least two entries, each positive.
    weight_kind : ``"ternary"`` or ``"binary"``
    activation : ``"ternary"`` or ``"sign"``
    delta : float
        Ternary weight dead zone, ``>= 0``.
    act_threshold : float
        Ternary activation dead zone on the BatchNorm output, ``>= 0``.
    """

    def __init__(self, sizes, weight_kind="ternary", activation="ternary", delta=0.05,
                 act_threshold=0.5):
        super().__init__()
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
        self.linears = nn.ModuleList(QuantLinear(n_in, n_out, weight_kind, delta)
                                     for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(n_out) for n_out in sizes[1:])

    def activate(self, y):
        """The hidden activation applied to BatchNorm outputs ``y``."""
        if self.activation == "sign":
            return sign_activation(y)
        return ternary_activation(y, self.act_threshold)

    def forward(self, x):
        """Logits [N, classes] of float inputs ``x`` [N, sizes[0]]."""
        h = x
        last = len(self.linears) - 1
        for index, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            h = norm(linear(h))
            if index < last:
                h = self.activate(h)
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
        acts : list of float tensors [N, out], one per hidden layer, values in {-1, 0, +1}
        logits : float tensor [N, classes]
        """
        was_training = self.training
        self.eval()
        try:
            h = torch.as_tensor(x).to(torch.float32)
            acts = []
            last = len(self.linears) - 1
            for index, (linear, norm) in enumerate(zip(self.linears, self.norms)):
                h = norm(linear(h))
                if index < last:
                    h = self.activate(h)
                    acts.append(h)
            return acts, h
        finally:
            self.train(was_training)

    def quantized_weights(self):
        """The quantized weights of every layer as float tensors with values in {-1, 0, +1}."""
        with torch.no_grad():
            return [linear.quantized_weight() for linear in self.linears]

    def describe(self):
        """A JSON-serialisable description of the architecture (enough to rebuild it)."""
        return {"sizes": list(self.sizes), "weight_kind": self.weight_kind,
                "activation": self.activation, "delta": self.delta,
                "act_threshold": self.act_threshold}
