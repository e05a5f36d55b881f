"""Metaplastic updates of binarized networks' hidden weights (Laborieux et al., Nat. Commun. 2021).

A binarized network's forward pass uses ``W_b = sign(W_h)``; the hidden weight ``W_h`` is a float
that the learning rule moves. Metaplasticity reads ``|W_h|`` as the synapse's consolidation: an
update that would *shrink* ``|W_h|`` (and so bring the binary weight closer to a switch) is
scaled down by ``f_meta(m, W_h)``, an update that grows ``|W_h|`` passes unchanged.

Three pieces:

``f_meta(m, w)``
    ``1 - tanh(m * w)**2`` (thesis eq. 2.13): 1 at ``w = 0`` or ``m = 0``, flat at 0, decays to 0
    as ``|w|`` grows. ``f_meta_hard(m, w)`` is the hard threshold of thesis appendix A.4: 1 where
    ``|w| < m``, 0 where ``|w| >= m`` (here ``m`` is the threshold, 0.4 in the thesis).

``metaplastic_update(w, u, lr, m)``
    The rule of the paper (Algorithm 1) for any update ``U``::

        W_h <- W_h - lr * U * f_meta(m, W_h)    if U * W_h > 0   (the step shrinks |W_h|)
        W_h <- W_h - lr * U                     otherwise        (including W_h = 0 or U = 0)

:class:`MetaplasticAdam`
    The authors' Adam variant: ``f_meta`` scales Adam's first moment (the bias correction is in
    the step size) where ``sign(W_h) * m_t > 0``, before the division by ``sqrt(v_hat) + eps``.
    Weight decay is added to the gradient before the moments (coupled, ``1e-7`` by default). Every
    parameter with fewer than two dimensions (BatchNorm) gets plain Adam whatever its group's
    ``m``. ``m`` is set per parameter group (per layer: :func:`layer_groups`). With ``m = 0``
    every step equals ``torch.optim.Adam``'s (same operations in the same order), bit for bit.
"""


import numpy as np
import torch

from ..errors import NmflowError, check_choice, check_number

__all__ = ["f_meta", "f_meta_hard", "metaplastic_update", "MetaplasticAdam", "layer_groups",
           "complex_synapse_step", "ComplexSynapseRule", "COMPLEX_DEFAULTS", "COMPLEX_SHORT_TASKS",
           "FMETA_KINDS", "DEFAULT_WEIGHT_DECAY"]

#: ``"tanh"``: ``1 - tanh^2(m W_h)`` (eq. 2.13); ``"hard"``: 1 where ``|W_h| < m`` else 0 (A.4).
FMETA_KINDS = ("tanh", "hard")
#: The authors' coupled weight decay.
DEFAULT_WEIGHT_DECAY = 1e-7


def check_m(m, name="m"):
    """``m`` as a float if it is a finite number >= 0; else one-line :class:`NmflowError`."""
    return check_number(name, m, 0)


def _is_torch(x):
    return isinstance(x, torch.Tensor)


def f_meta(m, w):
    """``1 - tanh(m * w)**2`` elementwise, for a torch tensor or anything NumPy takes.

    Returns the same kind as ``w`` (tensor of ``w``'s dtype, or a float64 ndarray).
    """
    m = check_m(m)
    if _is_torch(w):
        return 1 - torch.tanh(m * w) ** 2
    w = np.asarray(w, dtype=np.float64)
    return 1.0 - np.tanh(m * w) ** 2


def f_meta_hard(m, w):
    """Hard threshold (thesis A.4): 1 where ``|w| < m``, 0 where ``|w| >= m``.

    ``m`` is the threshold; ``m = 0`` consolidates every weight (no shrinking step ever passes),
    ``m = inf`` is not accepted (use ``f_meta`` with ``m = 0`` for plain updates).
    """
    m = check_m(m)
    if _is_torch(w):
        return (w.abs() < m).to(w.dtype)
    w = np.asarray(w, dtype=np.float64)
    return (np.abs(w) < m).astype(np.float64)


_FMETA = {"tanh": f_meta, "hard": f_meta_hard}


def metaplastic_update(w, u, lr, m, kind="tanh"):
    """One application of the paper's rule (Algorithm 1, lines 6-11) to hidden weights ``w``.

    Parameters
    ----------
    w : torch tensor or array-like
        Hidden weights ``W_h``.
    u : same shape as ``w``
        The update ``U`` the optimizer prescribes (the step is ``-lr * U``).
    lr : float
        Learning rate ``eta``, a finite number >= 0.
    m : float
        Metaplasticity ``m >= 0`` (the threshold for ``kind="hard"``).
    kind : ``"tanh"`` or ``"hard"``

    Returns
    -------
    New hidden weights (a new tensor / float64 ndarray): ``w - lr * u * f_meta(m, w)`` where
    ``u * w > 0``, ``w - lr * u`` elsewhere.
    """
    check_choice("kind", kind, FMETA_KINDS)
    check_number("lr", lr, 0)
    f = _FMETA[kind]
    if _is_torch(w):
        u = torch.as_tensor(u, dtype=w.dtype)
        if u.shape != w.shape:
            raise NmflowError(f"u must have the shape of w {tuple(w.shape)}, not {tuple(u.shape)}")
        shrink = u * w > 0
        return w - lr * torch.where(shrink, u * f(m, w), u)
    w = np.asarray(w, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != w.shape:
        raise NmflowError(f"u must have the shape of w {w.shape}, not {u.shape}")
    shrink = u * w > 0
    return w - lr * np.where(shrink, u * f(m, w), u)


class MetaplasticAdam(torch.optim.Optimizer):
    """Adam whose steps on hidden weights are metaplastic (the authors' variant).

    For every parameter ``p`` with gradient ``g`` (all arithmetic in ``p``'s dtype, in the order
    of ``torch.optim.Adam``'s single-tensor code, so that ``m = 0`` reproduces it bit for bit)::

        t += 1
        g  = g + weight_decay * p                    (coupled decay, when weight_decay != 0)
        m_t = lerp(m_t, g, 1 - beta1);  v_t = beta2 * v_t + (1 - beta2) * g * g
        step_size = lr / (1 - beta1**t);  denom = sqrt(v_t) / sqrt(1 - beta2**t) + eps
        M = m_t                                      if p.dim() < 2 (BatchNorm: plain Adam)
        M = where(sign(p) * m_t > 0, f_meta(m, p) * m_t, m_t)     otherwise
        p = p - step_size * M / denom

    The stored first moment ``m_t`` is never scaled, only the step.

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
    lr : float
    betas : (float, float)
    eps : float
    weight_decay : float
        Coupled L2 decay added to the gradient (default :data:`DEFAULT_WEIGHT_DECAY`).
    meta : float
        Default ``m`` of a group (a group dict may set its own ``"meta"``).
    fmeta : ``"tanh"`` or ``"hard"``
        Default ``f_meta`` of a group (``"fmeta"`` in a group dict).
    weight_rule : callable, optional
        Replaces the last line for parameters with two or more dimensions: called as
        ``weight_rule(p, step, group)`` with ``step = step_size * m_t / denom`` (the plain Adam
        step, ``U`` of the paper's rule with ``lr`` folded in); it must update ``p`` in place.
        Used to run a fixed-point twin of the rule in the training loop.
    """

    def __init__(self, params, lr=0.005, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=DEFAULT_WEIGHT_DECAY, meta=0.0, fmeta="tanh", weight_rule=None):
        for name, value, low in (("lr", lr, 0.0), ("eps", eps, 0.0),
                                 ("weight_decay", weight_decay, 0.0)):
            check_number(name, value, low)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2
                and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)):
            raise NmflowError(f"betas must be two numbers in [0, 1), not {betas!r}")
        check_m(meta, "meta")
        check_choice("fmeta", fmeta, FMETA_KINDS)
        defaults = dict(lr=float(lr), betas=tuple(float(b) for b in betas), eps=float(eps),
                        weight_decay=float(weight_decay), meta=float(meta), fmeta=fmeta)
        super().__init__(params, defaults)
        for group in self.param_groups:
            check_m(group["meta"], "meta")
            check_choice("fmeta", group["fmeta"], FMETA_KINDS)
        self.weight_rule = weight_rule

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
            meta, f = group["meta"], _FMETA[group["fmeta"]]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise NmflowError("MetaplasticAdam does not take sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p,
                                                           memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                if decay != 0:
                    grad = grad.add(p, alpha=decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                t = state["step"].item()
                step_size = lr / (1 - beta1 ** t)
                denom = (exp_avg_sq.sqrt() / (1 - beta2 ** t) ** 0.5).add_(eps)
                if p.dim() < 2:
                    p.addcdiv_(exp_avg, denom, value=-step_size)
                elif self.weight_rule is not None:
                    self.weight_rule(p, exp_avg / denom * step_size, group)
                else:
                    shrink = torch.sign(p) * exp_avg > 0
                    moment = torch.where(shrink, f(meta, p) * exp_avg, exp_avg)
                    p.addcdiv_(moment, denom, value=-step_size)
        return loss


def layer_groups(net, m, fmeta="tanh"):
    """Parameter groups of ``net``: one per weight matrix (two or more dimensions) with its ``m``,
    and one for every other parameter (BatchNorm: plain Adam).

    Parameters
    ----------
    net : torch.nn.Module
    m : float or sequence of float
        One ``m`` for every layer, or one per weight matrix in ``net.parameters()`` order.
    fmeta : ``"tanh"`` or ``"hard"``
    """
    weights = [p for p in net.parameters() if p.dim() >= 2]
    others = [p for p in net.parameters() if p.dim() < 2]
    if isinstance(m, (list, tuple)):
        if len(m) != len(weights):
            raise NmflowError(f"m must hold one value per weight matrix ({len(weights)}), "
                              f"not {len(m)}")
        ms = [check_m(value) for value in m]
    else:
        ms = [check_m(m)] * len(weights)
    groups = [{"params": [p], "meta": value, "fmeta": fmeta} for p, value in zip(weights, ms)]
    if others:
        groups.append({"params": others, "meta": 0.0, "fmeta": fmeta})
    return groups


#: Thesis section 2.6 settings of the four-variable synapse (eta is the optimizer's), made for
#: tasks of about 10^4 steps: ``1/g34`` (10^4 steps) is about one task, ``1/eps`` about three.
COMPLEX_DEFAULTS = dict(g12=1e-2, g23=1e-3, g34=1e-4, eps=3e-5, alpha=5e-3, m=10.0)
#: The same timescales for tasks of about 300 Adam steps (lr 0.005): ``g12, g23, g34, eps,
#: alpha`` are the thesis' times 40 (10^4 / 300 ~ 33, rounded up), ``m = 40`` (hidden weights stay
#: about 40x smaller than after 10^4 steps; also the best m of the ``meta`` rule at this budget).
#: Tuned on digits, 10 permuted tasks x 300 steps (docs/metaplastic.md); for ``S`` steps per
#: task scale the five rates by ``300 / S`` (keeping ``g12 <= 0.5``).
COMPLEX_SHORT_TASKS = dict(g12=0.4, g23=0.04, g34=4e-3, eps=1.2e-3, alpha=0.2, m=40.0)


def complex_synapse_step(w, step, g12=1e-2, g23=1e-3, g34=1e-4, eps=3e-5, alpha=5e-3, m=10.0):
    """One step of the four-hidden-variable synapse of thesis eq. 2.8 (section 2.6).

    ``w = (W1, W2, W3, W4)`` (tensors or arrays of one shape; the binary weight is
    ``sign(W1)``) and ``step`` is the update the optimizer prescribes for ``W1`` (``eta * dL/dW_b``
    in eq. 2.8, Adam's step here). All right-hand sides use the values at time ``t``::

        W1 += -step + g12 (W2 - W1) [+ alpha (W4 - W1)  unless (W1 - W4) sign(W4) > 0]
        W2 += g12 (W1 - W2) + g23 (W3 - W2)
        W3 += g23 (W2 - W3) + g34 (W4 - W3)
        W4 += g34 c (W3 - W4) - eps W4,  c = 1 if |W3| > |W4| else f_meta(m, W4)

    Returns the four new variables (new objects of ``w``'s kind).
    """
    w1, w2, w3, w4 = w
    torchy = _is_torch(w1)
    sign = torch.sign if torchy else np.sign
    where = torch.where if torchy else np.where
    absolute = torch.abs if torchy else np.abs
    feedback = where((w1 - w4) * sign(w4) > 0, 0.0 * w1, alpha * (w4 - w1))
    n1 = w1 - step + g12 * (w2 - w1) + feedback
    n2 = w2 + g12 * (w1 - w2) + g23 * (w3 - w2)
    n3 = w3 + g23 * (w2 - w3) + g34 * (w4 - w3)
    c = where(absolute(w3) > absolute(w4), 1.0 + 0.0 * w4, f_meta(m, w4))
    n4 = w4 + g34 * c * (w3 - w4) - eps * w4
    return n1, n2, n3, n4


class ComplexSynapseRule:
    """A ``weight_rule`` for :class:`MetaplasticAdam` that gives every weight matrix the synapse
    of :func:`complex_synapse_step`: the parameter is ``W1``; ``W2..W4`` (starting at 0) live in
    this object, one set per parameter."""

    def __init__(self, **settings):
        unknown = set(settings) - set(COMPLEX_DEFAULTS)
        if unknown:
            raise NmflowError(f"complex synapse settings must be among "
                              f"{', '.join(COMPLEX_DEFAULTS)}, not {sorted(unknown)[0]!r}")
        self.settings = {**COMPLEX_DEFAULTS, **settings}
        for name, value in self.settings.items():
            check_m(value, name)
        self.deep = {}

    def __call__(self, p, step, group):
        deep = self.deep.setdefault(id(p), [torch.zeros_like(p) for _ in range(3)])
        new = complex_synapse_step((p.detach(), *deep), step, **self.settings)
        p.copy_(new[0])
        for old, value in zip(deep, new[1:]):
            old.copy_(value)
