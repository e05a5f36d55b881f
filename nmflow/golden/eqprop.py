"""Equilibrium Propagation (EP) on fully connected convergent networks, in float (PyTorch).

The science is the thesis' chapter 3 ([T] eq. 3.1-3.19, appendix B.3): a network whose state
``s = (s_1, ..., s_N)`` relaxes under a static input ``x = s_0`` to a steady state, and whose weights
learn from two or three steady states with a local rule. This module is the float reference; the
fixed-point twin that hardware computes is :mod:`nmflow.golden.eqprop_fixed`.

The network
-----------
``sizes = (n_0, n_1, ..., n_L)``: ``n_0`` inputs, ``n_L`` classes. Weights ``W_k`` are
``[n_{k+1}, n_k]`` and connect layer ``k`` to ``k + 1`` in both directions (bidirectional, tied).

* ``loss="squared"``: the state layers are ``1 .. L`` (the output ``s_L`` takes part in the
  dynamics); the primitive is
  ``Phi(x, s) = sum_k s_{k+1} . (W_k s_k) + sum_k b_k . s_{k+1}`` and the cost
  ``l = 1/2 |s_L - y|^2`` ([T] eq. 3.15). The class is ``argmax s_L``.
* ``loss="cross_entropy"``: the state layers are the hidden ones ``1 .. L-1``; the output is a
  softmax read-out ``y_hat = softmax(W_out s_{L-1})`` outside the dynamics ([T] eq. 3.17), cost
  ``l = -log y_hat[y]`` (eq. 3.18), nudge ``+beta W_out^T (y - y_hat)`` on the last hidden layer
  (eq. 3.19). The class is ``argmax W_out s_{L-1}``.

Dynamics: ``s_{t+1} = sigma(dPhi/ds(x, s_t) - beta dl/ds)`` (eq. 3.1 and 3.16 / 3.19), states
start at 0 and are fully replaced at every step. ``sigma`` is the hard sigmoid ``clip(x, 0, 1)``
(``"hard"``), ``clip(x / 2, 0, 1)`` (``"hard_half"``) or, for the gradient check, the smooth
logistic ``1 / (1 + exp(-4 (x - 1/2)))`` (``"logistic"``; same slope 1 at the centre).

Update order. ``"alternate"`` (the default): one time step first updates the odd layers
(1, 3, ...) from the current state, then the even layers (2, 4, ...) from the odd layers just
computed. Within a group no layer touches another, so this is the exact block update of every
layer given its neighbours, and it settles reliably; the fixed-point twin and the hardware use it.
``"sync"``: every layer from the previous state at once (a Jacobi step); it can oscillate once the
coupling's largest singular value exceeds 1.

Estimates ([T] eq. 3.11-3.14, Alg. 4-5). With ``G(s, beta) = d(Phi - beta l)/dtheta`` at a state:

* ``one_sided``:   ``(G(s^beta, beta) - G(s*, 0)) / beta``
* ``random_sign``: the same with the sign of beta drawn at random (per batch)
* ``symmetric``:   ``(G(s^beta, beta) - G(s^-beta, -beta)) / (2 beta)``; the ``-beta`` phase
  restarts from the free steady state ``s*``, like the ``+beta`` phase.

For the weights ``dPhi/dW_k = s_{k+1} s_k^T`` and ``dPhi/db_k = s_{k+1}`` (batch means): the rule
is local. The read-out's cost term gives ``W_out`` the update ``(y - y_hat) s^T`` averaged over the
nudged states. Every estimate approximates ``-dL/dtheta``; the step is ``theta += lr * estimate``.
:func:`bptt_gradient` computes the exact ``dL/dtheta`` of the loss after ``T`` free steps by
back-propagation through time (torch autograd through the same dynamics), and
:func:`gradient_check` compares the two.

Training with BPTT (:func:`train`) departs from that exact gradient in two ways, both needed with
the squared error and the hard sigmoid (issue 20; digits, docs/eqprop.md). (1) It back-propagates
through the last ``K`` of the ``T`` free steps only, from the state before them held fixed, as
the thesis' code does (``T1 - T2`` steps detached): through all steps the gradient of a sample
that has not settled (one leaving a saddle) grows with every step unrolled, and one such SGD step
(a batch gradient 14 times EP's estimate) ruined the network. (2) The output's clip at the last
step passes the error straight through: the default initialisation leaves some outputs clipped at
0 for almost every sample of their class, where the exact gradient is 0 and the class is never
learned (EP at small beta neither; EP's finite beta nudges the target across the clip).
"""

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import NmflowError, check_choice, check_int, check_number

__all__ = ["EqPropConfig", "EqPropNet", "ACTIVATIONS", "LOSSES", "ORDERS", "METHODS",
           "ESTIMATES", "relax", "free_phase", "ep_estimate", "bptt_gradient", "gradient_check",
           "fit_slope", "train", "accuracy", "prepare_inputs", "one_hot"]

ACTIVATIONS = ("hard", "hard_half", "logistic")
LOSSES = ("squared", "cross_entropy")
ORDERS = ("alternate", "sync")
ESTIMATES = ("one_sided", "random_sign", "symmetric")
#: ``real``: the weights are the parameters. ``binary``: the dynamics use ``alpha_k sign(W_k)``
#: (``W_k >= 0`` gives +1), the parameters ``W_k`` being hidden weights that the updates move
#: (Laydevant et al., CVPR workshops 2021: binary synapses with a scale, trained by EP).
WEIGHTS = ("real", "binary")
METHODS = ("bptt",) + ESTIMATES


def check_sizes(sizes):
    """The layer sizes of a network as a tuple: inputs, any hidden layers and the classes, each a
    positive integer; refused with one line otherwise."""
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise NmflowError(f"sizes must list the inputs, any hidden layers and the classes "
                          f"(at least 2 numbers), not {list(sizes)}")
    return tuple(check_int("sizes", n, 1) for n in sizes)


@dataclass(frozen=True)
class EqPropConfig:
    """Settings of a float EP network and its training (checked on construction).

    ``sizes`` holds the input count, the hidden sizes and the class count; ``lrs`` one learning
    rate per weight layer (``len(sizes) - 1`` of them: with ``cross_entropy`` the last one is the
    read-out's). Biases take the learning rate of their weight layer.
    """
    sizes: tuple = (64, 128, 10)
    loss: str = "squared"
    activation: str = "hard"
    order: str = "alternate"
    T: int = 40
    K: int = 15
    beta: float = 0.2
    lrs: tuple = (0.2, 0.1)
    batch: int = 32
    epochs: int = 30
    seed: int = 0
    dtype: str = "float32"
    weights: str = "real"
    #: Metaplasticity of the hidden weights (binary weights only): a step that moves ``W_h``
    #: toward 0 is scaled by ``f_meta(m, W_h) = 1 - tanh^2(m W_h)`` (Laborieux et al. 2021).
    m: float = 0.0
    #: Decay of the weights (hidden weights with binary weights): every update also takes
    #: ``decay * W`` off (through the metaplastic rule when ``m > 0``: a consolidated hidden
    #: weight does not decay). It keeps unconsolidated weights small and so plastic.
    decay: float = 0.0
    #: Scale of the binary weights (binary weights only): ``alpha_k = alpha_scale / (2
    #: sqrt(n_k))``. 1 (default) is the mean magnitude of the initial weights.
    alpha_scale: float = 1.0

    def __post_init__(self):
        sizes = check_sizes(self.sizes)
        check_choice("weights", self.weights, WEIGHTS)
        check_choice("loss", self.loss, LOSSES)
        if self.loss == "cross_entropy" and len(sizes) < 3:
            raise NmflowError(f"loss 'cross_entropy' needs at least one hidden layer (the "
                              f"read-out reads a hidden layer), not sizes {list(sizes)}")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("order", self.order, ORDERS)
        check_int("T", self.T, 1)
        check_int("K", self.K, 1)
        check_number("beta", self.beta, above=0)
        lrs = tuple(self.lrs)
        if len(lrs) != len(sizes) - 1:
            raise NmflowError(f"lrs must give one learning rate per weight layer "
                              f"({len(sizes) - 1}), not {len(lrs)}")
        for lr in lrs:
            check_number("lrs", lr, above=0)
        check_int("batch", self.batch, 1)
        check_int("epochs", self.epochs, 1)
        check_int("seed", self.seed, 0)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        object.__setattr__(self, "m", check_number("m", self.m, 0))
        object.__setattr__(self, "decay", check_number("decay", self.decay, 0, 1))
        if self.m > 0 and self.weights != "binary":
            raise NmflowError(f"m must be 0 unless weights is 'binary' (metaplasticity "
                              f"consolidates binary synapses), not {self.m}")
        object.__setattr__(self, "alpha_scale",
                           check_number("alpha_scale", self.alpha_scale, above=0))
        if self.alpha_scale != 1.0 and self.weights != "binary":
            raise NmflowError(f"alpha_scale must be 1 unless weights is 'binary' (it scales "
                              f"the binary weights), not {self.alpha_scale:g}")
        object.__setattr__(self, "sizes", tuple(int(n) for n in sizes))
        object.__setattr__(self, "lrs", tuple(float(lr) for lr in lrs))

    @property
    def n_states(self):
        """Number of state layers ``N`` (the output counts with ``squared``)."""
        return len(self.sizes) - 1 if self.loss == "squared" else len(self.sizes) - 2

    def to_dict(self):
        return asdict(self)


def _torch():
    import torch
    return torch


def _act(name, a):
    torch = _torch()
    if name == "hard":
        return torch.clamp(a, 0.0, 1.0)
    if name == "hard_half":
        return torch.clamp(0.5 * a, 0.0, 1.0)
    return torch.sigmoid(4.0 * (a - 0.5))


@dataclass
class EqPropNet:
    """Parameters of a network: ``W[k]`` ``[n_{k+1}, n_k]`` and ``b[k]`` ``[n_{k+1}]`` for the
    ``N`` state layers; ``W_out`` ``[classes, n_{L-1}]`` (read-out, ``cross_entropy`` only)."""
    config: EqPropConfig
    W: list
    b: list
    W_out: object = None

    def weight(self, k):
        """The weights layer ``k``'s dynamics use: ``W[k]``, or with binary weights
        ``alpha_k sign(W[k])``, ``alpha_k = alpha_scale / (2 sqrt(n_k))``; at ``alpha_scale = 1``
        the mean magnitude of the initial weights (on digits 64-64-10, 2x that scale does not
        learn, 0.6x learns worse, 1.25x learns better: docs/eqprop.md),
        whose gradient (BPTT) passes straight through to the hidden ``W[k]``; EP's estimate,
        ``s_{k+1} s_k^T``, is the hidden weights' step as it is the real weights'."""
        w = self.W[k]
        if self.config.weights == "real":
            return w
        torch = _torch()
        alpha = self.config.alpha_scale * 0.5 / math.sqrt(self.config.sizes[k])
        binary = torch.where(w >= 0, alpha, -alpha).to(w.dtype)
        return w + (binary - w).detach() if w.requires_grad else binary

    @classmethod
    def init(cls, config, seed=None):
        """PyTorch's default ``nn.Linear`` initialisation, ``U(-1/sqrt(n_in), 1/sqrt(n_in))``
        for weights and biases, drawn from a NumPy generator (the same on every machine)."""
        torch = _torch()
        rng = np.random.default_rng(config.seed if seed is None else seed)
        dtype = getattr(torch, config.dtype)
        sizes = config.sizes

        def uniform(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return torch.tensor(rng.uniform(-bound, bound, size=shape), dtype=dtype)

        W, b = [], []
        for k in range(config.n_states):
            W.append(uniform((sizes[k + 1], sizes[k]), sizes[k]))
            b.append(uniform((sizes[k + 1],), sizes[k]))
        W_out = None
        if config.loss == "cross_entropy":
            W_out = uniform((sizes[-1], sizes[-2]), sizes[-2])
        return cls(config, W, b, W_out)

    def parameters(self):
        return [*self.W, *self.b] + ([self.W_out] if self.W_out is not None else [])

    def lr_of(self):
        """The learning rate of each entry of :meth:`parameters`."""
        lrs = self.config.lrs
        n = self.config.n_states
        return [*lrs[:n], *lrs[:n]] + ([lrs[-1]] if self.W_out is not None else [])

    def clone(self):
        return EqPropNet(self.config, [w.clone() for w in self.W], [v.clone() for v in self.b],
                         None if self.W_out is None else self.W_out.clone())

    def numpy(self):
        """Plain NumPy float64 copies, for saving and for the fixed-point twin."""
        out = {f"W{k}": w.detach().double().numpy() for k, w in enumerate(self.W)}
        out.update({f"b{k}": v.detach().double().numpy() for k, v in enumerate(self.b)})
        if self.W_out is not None:
            out["W_out"] = self.W_out.detach().double().numpy()
        return out


def one_hot(y, classes, dtype):
    torch = _torch()
    return torch.nn.functional.one_hot(torch.as_tensor(y, dtype=torch.int64),
                                       classes).to(dtype)


def _readout_probs(net, s_last):
    torch = _torch()
    return torch.softmax(s_last @ net.W_out.T, dim=1)


def _drive(net, x, s, k, beta, y1h):
    """Pre-activation of state layer ``k`` (1-based): ``dPhi/ds_k - beta dl/ds_k``."""
    N = len(s)
    below = x if k == 1 else s[k - 2]
    a = below @ net.weight(k - 1).T + net.b[k - 1]
    if k < N:
        a = a + s[k] @ net.weight(k)
    if k == N and beta != 0.0:
        if net.W_out is None:
            a = a + beta * (y1h - s[N - 1])
        else:
            a = a + beta * ((y1h - _readout_probs(net, s[N - 1])) @ net.W_out)
    return a


def _straight(name, a):
    """The activation of ``a`` whose derivative is the slope of its linear part everywhere (1 for
    ``hard``, 1/2 for ``hard_half``): the straight-through clip. The logistic is left as is."""
    value = _act(name, a)
    if name == "logistic":
        return value
    linear = a if name == "hard" else 0.5 * a
    return linear + (value - linear).detach()


def _step(net, x, s, beta, y1h, straight=False):
    """One time step; with ``straight`` the last state layer takes the straight-through clip."""
    act = net.config.activation
    N = len(s)

    def new(s, k):
        a = _drive(net, x, s, k, beta, y1h)
        return _straight(act, a) if straight and k == N else _act(act, a)

    if net.config.order == "sync":
        return [new(s, k) for k in range(1, N + 1)]
    s = list(s)
    for parity in (1, 0):                      # odd layers first, then even layers
        for k in range(1, N + 1):
            if k % 2 == parity:
                s[k - 1] = new(s, k)
    return s


def relax(net, x, s, steps, beta=0.0, y1h=None):
    """``steps`` time steps of the dynamics from the state list ``s``; returns the new state."""
    for _ in range(steps):
        s = _step(net, x, s, beta, y1h)
    return s


def _zeros(net, batch):
    torch = _torch()
    dtype = getattr(torch, net.config.dtype)
    return [torch.zeros((batch, n), dtype=dtype)
            for n in net.config.sizes[1:1 + net.config.n_states]]


def free_phase(net, x, steps=None):
    """The free steady state after ``steps`` (default ``T``) steps from ``s = 0``."""
    return relax(net, x, _zeros(net, x.shape[0]), net.config.T if steps is None else steps)


def _logits(net, s):
    return s[-1] if net.W_out is None else s[-1] @ net.W_out.T


def loss_of(net, s, y):
    """Batch-mean loss of the state ``s`` for labels ``y`` (``1/2 |s_L - y|^2`` or CE)."""
    torch = _torch()
    if net.W_out is None:
        y1h = one_hot(y, net.config.sizes[-1], s[-1].dtype)
        return 0.5 * ((s[-1] - y1h) ** 2).sum(dim=1).mean()
    return torch.nn.functional.cross_entropy(s[-1] @ net.W_out.T, torch.as_tensor(y))


def _G(net, x, s, beta, y1h):
    """``d(Phi - beta l)/dtheta`` at state ``s`` (batch mean), in :meth:`parameters` order."""
    B = x.shape[0]
    layers = [x, *s]
    grads = [layers[k + 1].T @ layers[k] / B for k in range(len(s))]
    grads += [layers[k + 1].mean(dim=0) for k in range(len(s))]
    if net.W_out is not None:
        grads.append(beta * ((y1h - _readout_probs(net, s[-1])).T @ s[-1]) / B)
    return grads


def ep_estimate(net, x, y, estimate, beta=None, K=None, rng=None, s_free=None):
    """The EP estimate of ``-dL/dtheta`` (a list in :meth:`EqPropNet.parameters` order).

    ``estimate`` is one of :data:`ESTIMATES`; ``random_sign`` needs ``rng`` (a NumPy Generator).
    ``s_free`` is the free steady state if already computed (else ``T`` free steps).
    """
    torch = _torch()
    check_choice("estimate", estimate, ESTIMATES)
    beta = net.config.beta if beta is None else check_number("beta", beta, above=0)
    K = net.config.K if K is None else check_int("K", K, 1)
    with torch.no_grad():
        s_star = free_phase(net, x) if s_free is None else s_free
        y1h = one_hot(y, net.config.sizes[-1], x.dtype)
        if estimate == "random_sign":
            if rng is None:
                raise NmflowError("estimate 'random_sign' needs a random source: pass rng=")
            beta = beta if rng.random() < 0.5 else -beta
        s_plus = relax(net, x, s_star, K, beta, y1h)
        g_plus = _G(net, x, s_plus, beta, y1h)
        if estimate == "symmetric":
            s_minus = relax(net, x, s_star, K, -beta, y1h)
            g_minus = _G(net, x, s_minus, -beta, y1h)
            return [(p - m) / (2 * beta) for p, m in zip(g_plus, g_minus)]
        g_free = _G(net, x, s_star, 0.0, y1h)
        return [(p - f) / beta for p, f in zip(g_plus, g_free)]


def bptt_gradient(net, x, y, steps=None, window=None, straight_through=False):
    """``(loss, dL/dtheta)`` by back-propagation through time: autograd through the same dynamics.

    The loss is the one after ``steps`` (default ``T``) free steps from 0. The gradient flows
    through the last ``window`` of them (default: all), from the state before them held fixed:
    ``window = K`` is the truncated BPTT that EP's ``K`` nudged steps from ``s*`` estimate (the
    GDU property, [T] ch. 3). With the defaults the gradient is exact. ``straight_through``
    (``squared`` loss with a clip activation only) lets the output's clip at the last step pass
    the error ``s_L - y`` unchanged: the gradient then differs from the exact one only where an
    output is clipped on the wrong side of its target (a target output at 0, another output at
    1), where the exact one is 0.
    """
    torch = _torch()
    steps = net.config.T if steps is None else check_int("steps", steps, 1)
    window = steps if window is None else min(check_int("window", window, 1), steps)
    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    n = net.config.n_states
    shadow = EqPropNet(net.config, params[:n], params[n:2 * n],
                       params[2 * n] if net.W_out is not None else None)
    with torch.no_grad():
        s = relax(net, x, _zeros(net, x.shape[0]), steps - window)
    s = relax(shadow, x, s, window - 1)
    s = _step(shadow, x, s, 0.0, None, straight=straight_through and net.W_out is None)
    loss = loss_of(shadow, s, y)
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), [g.detach() for g in grads]


def _flat(tensors):
    torch = _torch()
    return torch.cat([t.reshape(-1) for t in tensors])


def fit_slope(betas, errors):
    """Least-squares slope of ``log(error)`` against ``log(beta)``."""
    lb, le = np.log(np.asarray(betas, float)), np.log(np.asarray(errors, float))
    return float(np.polyfit(lb, le, 1)[0])


def gradient_check(sizes=(16, 20, 12, 5), activation="logistic", betas=(0.1, 0.05, 0.025, 0.0125),
                   T=200, K=200, batch=32, seed=0, loss="squared", order="alternate",
                   weight_scale=1.0):
    """Relative error of each EP estimate against BPTT over ``betas``, and the log-log slopes.

    A random float64 network (default init times ``weight_scale``) and a random batch of inputs in
    [0, 1] and labels; BPTT runs ``T`` steps, the EP phases ``T`` free and ``K`` nudged steps.
    Returns ``{"betas": [...], "one_sided": [...], "symmetric": [...], "one_sided_slope": ..,
    "symmetric_slope": ..}``; the relative error is ``|ep + g| / |g|`` over all parameters.
    """
    torch = _torch()
    config = EqPropConfig(sizes=tuple(sizes), loss=loss, activation=activation, order=order,
                          T=T, K=K, lrs=(1.0,) * (len(sizes) - 1), batch=batch, seed=seed,
                          dtype="float64")
    net = EqPropNet.init(config)
    if weight_scale != 1.0:
        net = EqPropNet(config, [w * weight_scale for w in net.W], net.b,
                        None if net.W_out is None else net.W_out * weight_scale)
    rng = np.random.default_rng(seed + 1)
    x = torch.tensor(rng.random((batch, sizes[0])), dtype=torch.float64)
    y = torch.tensor(rng.integers(0, sizes[-1], batch), dtype=torch.int64)
    _, g = bptt_gradient(net, x, y)
    g = _flat(g)
    with torch.no_grad():
        s_free = free_phase(net, x)
    out = {"betas": [float(b) for b in betas], "one_sided": [], "symmetric": []}
    for beta in betas:
        for name in ("one_sided", "symmetric"):
            e = _flat(ep_estimate(net, x, y, name, beta=beta, s_free=s_free))
            out[name].append(float(torch.linalg.norm(e + g) / torch.linalg.norm(g)))
    out["one_sided_slope"] = fit_slope(betas, out["one_sided"])
    out["symmetric_slope"] = fit_slope(betas, out["symmetric"])
    out["settings"] = {"sizes": list(sizes), "activation": activation, "T": T, "K": K,
                       "batch": batch, "seed": seed, "loss": loss, "order": order,
                       "dtype": "float64"}
    return out


# -- training -------------------------------------------------------------------------------------

def prepare_inputs(x_uint, scale):
    """Float inputs in [0, 1]: the unsigned pixels divided by ``scale`` (the largest pixel value
    of the dataset: 16 for digits, 255 for MNIST)."""
    return np.asarray(x_uint, dtype=np.float64) / float(scale)


def _over_chunks(net, x, y, chunk, measure):
    """The sum of ``measure(states, labels)`` over ``x`` in chunks of ``chunk`` samples, each
    after ``T`` free steps (no gradient)."""
    torch = _torch()
    dtype = getattr(torch, net.config.dtype)
    total = 0
    with torch.no_grad():
        for start in range(0, len(y), chunk):
            xb = torch.as_tensor(x[start:start + chunk], dtype=dtype)
            total += measure(free_phase(net, xb), y[start:start + chunk])
    return total


def accuracy(net, x, y, chunk=1024):
    """Fraction of ``x`` whose class after ``T`` free steps is ``y`` (ties: lowest index)."""
    def right(s, labels):
        return int((_logits(net, s).argmax(dim=1).numpy() == np.asarray(labels)).sum())
    return _over_chunks(net, x, y, chunk, right) / max(len(y), 1)


def mean_loss(net, x, y, chunk=1024):
    """The loss after ``T`` free steps, averaged over ``x``."""
    def loss(s, labels):
        return float(loss_of(net, s, labels)) * len(labels)
    return _over_chunks(net, x, y, chunk, loss) / max(len(y), 1)


def apply_steps(net, steps, lrs):
    """``theta += lr * step`` for every parameter, the weights less ``decay * W``; with ``m > 0``
    the weights (hidden weights) take the metaplastic rule instead
    (:func:`nmflow.golden.metaplastic.metaplastic_update` with ``U = -step + decay W / lr``: a
    step toward 0, the decay's included, scaled by ``f_meta(m, W_h)``). Biases take the plain
    step."""
    torch = _torch()
    m, decay = net.config.m, net.config.decay
    n = len(net.W)
    with torch.no_grad():
        for i, (p, d, lr) in enumerate(zip(net.parameters(), steps, lrs)):
            if i < n and m > 0:
                from .metaplastic import metaplastic_update
                p.copy_(metaplastic_update(p, -d + (decay / lr) * p, lr, m))
            elif i < n and decay > 0:
                p.add_(lr * d - decay * p)
            else:
                p.add_(lr * d)


def train(config, method, x_train, y_train, x_test, y_test, progress=None):
    """Train a fresh network (seed ``config.seed``) with ``method`` (one of :data:`METHODS`).

    ``x_*`` are float inputs in [0, 1] (:func:`prepare_inputs`), ``y_*`` labels. Plain SGD with
    the layer learning rates; the same initialisation and batch order for every method. BPTT
    back-propagates through the last ``K`` free steps with the straight-through output clip
    (:func:`bptt_gradient`, ``window=K, straight_through=True``; see the module notes). Returns
    ``(net, history)``: per epoch the train loss (mean over batches, at the free state before the
    update), the test accuracy and loss, and the seconds.
    """
    torch = _torch()
    check_choice("method", method, METHODS)
    if int(np.max(y_train, initial=0)) >= config.sizes[-1] or \
            int(np.max(y_test, initial=0)) >= config.sizes[-1]:
        raise NmflowError(f"sizes must end with the class count (at least "
                          f"{int(max(np.max(y_train), np.max(y_test))) + 1}), not "
                          f"{config.sizes[-1]}")
    if x_train.shape[1] != config.sizes[0]:
        raise NmflowError(f"sizes must start with the input count {x_train.shape[1]}, not "
                          f"{config.sizes[0]}")
    net = EqPropNet.init(config)
    dtype = getattr(torch, config.dtype)
    order_rng = np.random.default_rng(config.seed + 1000)
    sign_rng = np.random.default_rng(config.seed + 2000)
    lrs = net.lr_of()
    history = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        order = order_rng.permutation(len(y_train))
        losses = []
        for first in range(0, len(order), config.batch):
            idx = order[first:first + config.batch]
            xb = torch.as_tensor(x_train[idx], dtype=dtype)
            yb = torch.as_tensor(y_train[idx], dtype=torch.int64)
            if method == "bptt":
                loss, grads = bptt_gradient(net, xb, yb, window=config.K,
                                            straight_through=True)
                steps = [-g for g in grads]
            else:
                with torch.no_grad():
                    s_free = free_phase(net, xb)
                    loss = float(loss_of(net, s_free, yb))
                steps = ep_estimate(net, xb, yb, method, rng=sign_rng, s_free=s_free)
            losses.append(loss)
            apply_steps(net, steps, lrs)
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                  "test_accuracy": accuracy(net, x_test, y_test),
                  "test_loss": mean_loss(net, x_test, y_test), "seconds": round(seconds, 4)}
        if not math.isfinite(record["train_loss"]):
            record["train_loss"] = None
        history.append(record)
        if progress is not None:
            progress(method, epoch + 1, config.epochs, record)
    return net, history
