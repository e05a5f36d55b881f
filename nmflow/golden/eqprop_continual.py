"""Permuted-digits tasks learned in sequence by binarized Equilibrium Propagation, with and
without metaplastic consolidation of its updates (issue 20; the thesis' perspective at the end of
chapter 5: a learning rule and a consolidation rule that are both local).

The protocol is ``nmflow continual``'s (:mod:`nmflow.golden.continual`): task 1 is the data set
as it is, tasks 2.. permute its pixels (:func:`~nmflow.golden.continual.permutations`, the same
permutations for the same seed); each task is trained for ``epochs`` epochs, one after the other,
with no data of earlier tasks; after every task every task's test accuracy is measured (the
matrix ``after[t][j]``: task ``j``'s accuracy after learning task ``t``). ``final`` is the last
row. The weights are one set for all tasks. The biases are the task's own
(``task_biases=True``, the default): task ``t`` starts from a copy of task ``t - 1``'s biases and
every task is measured with its own, as the binarized networks of ``nmflow continual`` (and of
Laborieux et al.) keep a BatchNorm per task; a neuron's bias is one number per task on the chip.

Two settings make the sequence work with EP's plain steps (measured on digits, 5 tasks, 10
epochs each; docs/eqprop.md):

* ``decay``: every update also takes ``decay * W_h`` off the hidden weights (through the
  metaplastic rule, so consolidated ones keep their size). Without it the hidden weights grow
  task after task and even m = 0 stops learning: 64 hidden, the fifth task reached 62 % instead
  of 92 %.
* task biases: with shared biases, m = 10 kept task 1 at 40 % (128 hidden), with its own 64 %.

Each run is the same binarized network ``alpha_k sign(W_h)`` (:mod:`nmflow.golden.eqprop`,
``weights="binary"``) trained by the symmetric EP estimate:

* ``where="float"``: the float model, batches of ``batch``; ``m`` scales every step that moves a
  hidden weight toward 0 by ``f_meta(m, W_h)`` (:func:`nmflow.golden.eqprop.apply_steps`);
* ``where="fixed"``: the fixed-point twin (:mod:`nmflow.golden.eqprop_fixed`, ``m`` the integer
  rule of the metaplastic unit), what the hardware learning unit computes; its LFSR runs on from
  one task to the next, as it does on the chip.

Both draw their batch order from ``seed + 1000`` (one generator over the whole sequence) and
start from the same initial weights (the float initialisation, quantized for the twin).
"""

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import NmflowError, check_choice, check_int, check_number
from .pairs import sign_codes

__all__ = ["EqPropContinualConfig", "WHERE", "run_float", "run_fixed", "fixed_config",
           "features_and_classes",
           "float_config", "task_data", "summary"]

WHERE = ("float", "fixed")


@dataclass(frozen=True)
class EqPropContinualConfig:
    """Settings of the task sequence (checked on construction)."""
    #: Number of tasks (task 1 unpermuted).
    tasks: int = 5
    #: Epochs over each task's training images.
    epochs: int = 10
    #: Hidden layer sizes.
    hidden: tuple = (128,)
    #: Batch of the float runs; the fixed-point twin learns at ``fixed_batch`` (1 on the chip).
    batch: int = 32
    fixed_batch: int = 32
    #: Float learning rates, one per weight layer; the twin's are ``2**-lr_shifts``.
    lrs: tuple = (0.2, 0.1)
    lr_shifts: tuple = (2, 3)
    #: Settling: free steps, nudged steps, nudge.
    T: int = 40
    K: int = 15
    beta: float = 0.25
    #: Values of m, one metaplastic run each (m = 0 is always run).
    ms: tuple = (10.0, 15.0)
    #: Decay of the hidden weights per update (float); the twin's ``2**-decay_shift``.
    decay: float = 2.0 ** -10
    decay_shift: int = 10
    #: Biases of the task's own (see the module text), or one set shared by all tasks.
    task_biases: bool = True
    seed: int = 0

    def __post_init__(self):
        check_int("tasks", self.tasks, 1, 64)
        check_int("epochs", self.epochs, 1)
        hidden = tuple(self.hidden)
        if not hidden:
            raise NmflowError("hidden must give at least one hidden layer size, not none")
        for n in hidden:
            check_int("hidden", n, 1)
        check_int("batch", self.batch, 1)
        check_int("fixed_batch", self.fixed_batch, 1)
        if self.fixed_batch & (self.fixed_batch - 1):
            raise NmflowError(f"fixed_batch must be a power of two (the batch mean is a shift), "
                              f"not {self.fixed_batch}")
        layers = len(hidden) + 1
        for name in ("lrs", "lr_shifts"):
            if len(tuple(getattr(self, name))) != layers:
                raise NmflowError(f"{name} must give one value per weight layer ({layers}), not "
                                  f"{list(getattr(self, name))}")
        for lr in self.lrs:
            check_number("lrs", lr, above=0)
        for e in self.lr_shifts:
            check_int("lr_shifts", e, 0, 40)
        check_int("T", self.T, 1)
        check_int("K", self.K, 1)
        beta = check_number("beta", self.beta, above=0)
        if 2.0 ** -round(-math.log2(beta)) != beta:
            raise NmflowError(f"beta must be a power of two (the twin's nudge is a shift), not "
                              f"{self.beta}")
        for m in self.ms:
            check_number("ms", m, 0)
        check_number("decay", self.decay, 0, 1)
        check_int("decay_shift", self.decay_shift, 0, 62)
        if not isinstance(self.task_biases, bool):
            raise NmflowError(f"task_biases must be True or False, not {self.task_biases!r}")
        check_int("seed", self.seed, 0, 2 ** 31 - 1)
        object.__setattr__(self, "hidden", tuple(int(n) for n in hidden))
        object.__setattr__(self, "lrs", tuple(float(v) for v in self.lrs))
        object.__setattr__(self, "lr_shifts", tuple(int(v) for v in self.lr_shifts))
        object.__setattr__(self, "ms", tuple(float(m) for m in self.ms))

    @property
    def all_ms(self):
        """m = 0 first, then the metaplastic values."""
        return (0.0,) + tuple(m for m in self.ms if m != 0.0)

    def to_dict(self):
        out = asdict(self)
        for key in ("hidden", "lrs", "lr_shifts", "ms"):
            out[key] = list(out[key])
        return out


def _sizes(config, features, classes):
    return (features, *config.hidden, classes)


def float_config(config, features, classes, m):
    """The float network's :class:`~nmflow.golden.eqprop.EqPropConfig` for one run."""
    from .eqprop import EqPropConfig
    return EqPropConfig(sizes=_sizes(config, features, classes), loss="squared",
                        activation="hard", order="alternate", T=config.T, K=config.K,
                        beta=config.beta, lrs=config.lrs, batch=config.batch,
                        epochs=config.epochs, seed=config.seed, weights="binary", m=m,
                        decay=config.decay)


def fixed_config(config, features, classes, m):
    """The twin's :class:`~nmflow.golden.eqprop_fixed.FixedEqPropConfig` for one run."""
    from .eqprop_fixed import FixedEqPropConfig
    return FixedEqPropConfig(sizes=_sizes(config, features, classes), T=config.T, K=config.K,
                             beta_shift=round(-math.log2(config.beta)),
                             lr_shifts=config.lr_shifts, batch=config.fixed_batch,
                             epochs=config.epochs, seed=config.seed, weights="binary", m=m,
                             decay_shift=config.decay_shift)


def task_data(dataset, config):
    """Per task ``(x_train, x_test)`` of raw pixels, permuted, and the pixel scale."""
    from .continual import permutations
    x_train, x_test = np.asarray(dataset.x_train), np.asarray(dataset.x_test)
    perms = permutations(config.tasks, x_train.shape[1], config.seed)
    scale = max(int(x_train.max(initial=0)), 1)
    return [(x_train[:, p], x_test[:, p]) for p in perms], scale


def features_and_classes(dataset):
    """The data set's input count and class count (refused in one line without its arrays)."""
    for name in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(dataset, name):
            raise NmflowError(f"dataset must have {name}, not {type(dataset).__name__}")
    classes = int(max(np.max(dataset.y_train), np.max(dataset.y_test))) + 1
    return np.asarray(dataset.x_train).shape[1], classes


def run_float(config, dataset, m, progress=None):
    """The float run with metaplasticity ``m``: the accuracy matrix and the seconds."""
    import torch

    from . import eqprop as ep
    torch.set_num_threads(1)
    features, classes = features_and_classes(dataset)
    econfig = float_config(config, features, classes, m)
    tasks, scale = task_data(dataset, config)
    net = ep.EqPropNet.init(econfig)
    dtype = getattr(torch, econfig.dtype)
    order_rng = np.random.default_rng(config.seed + 1000)
    lrs = net.lr_of()
    y_train = np.asarray(dataset.y_train)
    tests = [ep.prepare_inputs(x_test, scale) for _, x_test in tasks]
    after, biases, start = [], [], time.perf_counter()
    for t, (x_train, _) in enumerate(tasks):
        x = ep.prepare_inputs(x_train, scale)
        for _ in range(config.epochs):
            order = order_rng.permutation(len(y_train))
            for first in range(0, len(order), config.batch):
                idx = order[first:first + config.batch]
                xb = torch.as_tensor(x[idx], dtype=dtype)
                yb = torch.as_tensor(y_train[idx], dtype=torch.int64)
                ep.apply_steps(net, ep.ep_estimate(net, xb, yb, "symmetric"), lrs)
        biases.append([b.clone() for b in net.b])
        row = []
        for j, x_test in enumerate(tests):
            net.b = list(biases[min(j, t)] if config.task_biases else biases[t])
            row.append(ep.accuracy(net, x_test, dataset.y_test))
        net.b = [b.clone() for b in biases[t]]
        after.append(row)
        if progress is not None:
            progress("float", m, t + 1, config.tasks)
    return _run_record("float", m, after, time.perf_counter() - start,
                       mean_abs_hidden=[float(w.abs().mean()) for w in net.W])


def run_fixed(config, dataset, m, progress=None, params=None, board=None, board_samples=50):
    """The fixed-point twin's run with metaplasticity ``m`` (integer only); also returns the
    final parameters. ``params`` starts from given ones (default: the twin's initialisation).

    ``board`` (``fixed_batch`` 1 only): a callable ``board(params, lfsr_state, xs, ys)`` that
    trains a board from ``params`` and the LFSR state on the samples ``xs`` (raw) with labels
    ``ys`` in order and returns the parameters read back (with ``"codes"``, the pair codes read
    back, compared too). It takes the first ``board_samples``
    samples of each task's first epoch; the twin computes the same samples, the two are
    compared (every hidden weight and bias, and so every binary weight's sign), and the run
    goes on from the board's parameters. The record is then ``where="board"`` with
    ``board_mismatches`` per task and ``board_equals_twin``."""
    from . import eqprop_fixed as fx
    features, classes = features_and_classes(dataset)
    fconfig = fixed_config(config, features, classes, m)
    tasks, scale = task_data(dataset, config)
    params = fx.init_params(fconfig) if params is None else params
    lfsr = fx.Lfsr32(fconfig.lfsr_seed)
    order_rng = np.random.default_rng(config.seed + 1000)
    y_train = np.asarray(dataset.y_train)
    tests = [fx.inputs_to_raw(x_test, scale, fconfig.state) for _, x_test in tasks]
    if board is not None and config.fixed_batch != 1:
        raise NmflowError(f"fixed_batch must be 1 for a board run (the unit learns sample by "
                          f"sample), not {config.fixed_batch}")
    board_samples = check_int("board_samples", board_samples, 1)
    after, biases, mismatches, start = [], [], [], time.perf_counter()
    for t, (x_train, _) in enumerate(tasks):
        x = fx.inputs_to_raw(x_train, scale, fconfig.state)
        for epoch in range(config.epochs):
            order = order_rng.permutation(len(y_train))
            skip = 0
            if board is not None and epoch == 0:
                prefix = order[:board_samples]
                before, state = params, lfsr.state
                for i in prefix:
                    params, _ = fx.train_step(fconfig, params, x[i:i + 1], y_train[i:i + 1],
                                              lfsr)
                got = board(before, state, x[prefix], y_train[prefix])
                mismatches.append(_mismatches(params, got))
                params = {"W": [np.asarray(w, dtype=np.int64) for w in got["W"]],
                          "b": [np.asarray(b, dtype=np.int64) for b in got["b"]]}
                skip = len(prefix)
            for first in range(skip, len(order), config.fixed_batch):
                idx = order[first:first + config.fixed_batch]
                params, _ = fx.train_step(fconfig, params, x[idx], y_train[idx], lfsr)
        biases.append([b.copy() for b in params["b"]])
        after.append([fx.accuracy(fconfig, {"W": params["W"], "b": biases[
            min(j, t) if config.task_biases else t]}, x_test, dataset.y_test)
            for j, x_test in enumerate(tests)])
        if progress is not None:
            progress("fixed", m, t + 1, config.tasks)
    w_scale = 2.0 ** fconfig.weight.frac_bits
    extra = {} if board is None else {
        "board_samples_per_task": int(min(board_samples, len(y_train))),
        "board_mismatches": mismatches, "board_equals_twin": not any(
            sum(v.values()) for v in mismatches)}
    record = _run_record("board" if board is not None else "fixed", m, after,
                         time.perf_counter() - start,
                         mean_abs_hidden=[float(np.abs(w).mean() / w_scale)
                                          for w in params["W"]], **extra)
    return record, dict(params, task_biases=biases)


def _mismatches(twin, board):
    """Hidden weights, binary weights (their signs), biases and, where the board's read-back
    has them (``board["codes"]``), pair codes that differ between the twin's parameters and a
    board's."""
    out = {"hidden_weights": 0, "binary_weights": 0, "biases": 0}
    if "codes" in board:
        out["pair_codes"] = 0
        for a, codes in zip(twin["W"], board["codes"]):
            out["pair_codes"] += int((sign_codes(a) != np.asarray(codes)).sum())
    for a, b in zip(twin["W"], board["W"]):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise NmflowError(f"board weights must have the twin's shape {a.shape}, not "
                              f"{b.shape}")
        out["hidden_weights"] += int((a != b).sum())
        out["binary_weights"] += int(((a >= 0) != (b >= 0)).sum())
    for a, b in zip(twin["b"], board["b"]):
        out["biases"] += int((np.asarray(a) != np.asarray(b)).sum())
    return out


def _run_record(where, m, after, seconds, **extra):
    check_choice("where", where, WHERE + ("board",))
    final = [float(a) for a in after[-1]]
    return {"method": "eqprop_meta" if m > 0 else "eqprop", "m": float(m),
            "weights": "binary", "where": where, "final": final,
            "mean_final": float(np.mean(final)),
            "learned": [float(after[t][t]) for t in range(len(after))],
            "after": [[float(a) for a in row] for row in after], "seconds": round(seconds, 2),
            **extra}


def summary(runs):
    """Per run: where, m, task 1 and the mean over tasks after the last task (fractions)."""
    return [{"where": r["where"], "method": r["method"], "m": r["m"],
             "task1_final": r["final"][0], "mean_final": r["mean_final"]} for r in runs]
