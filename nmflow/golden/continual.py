"""Continual learning with metaplastic binarized networks (Laborieux et al. 2021; thesis ch. 2).

Experiments
-----------
*Permuted tasks* (:func:`run_continual`): task ``k`` is the dataset with a fixed permutation of
the input pixels (task 1 unpermuted, the others drawn from ``seed``). The tasks are learned one
after the other for ``steps`` Adam steps each, never revisited; after every task (and
``evals_per_task`` times during it) the test accuracy of *every* task is measured. The result
holds the task-accuracy matrix ``matrix[i][j]`` = accuracy on task ``j`` after learning task
``i`` and ``final`` = its last row.

Methods (one run each, same initial weights, batches and permutations):

``plain``     Adam, ``m = 0`` (a conventional BNN: catastrophic forgetting);
``meta``      :class:`~nmflow.golden.metaplastic.MetaplasticAdam` with ``m`` (one run per ``m``);
``ewc``       Adam plus elastic weight consolidation on the *binary* weights (thesis section
              2.8): after task ``k`` the diagonal Fisher ``F_k`` is the mean over ``fisher_samples``
              training images of the squared gradient of ``log p(y|x)`` with respect to
              ``W_b = sign(W_h)``; later tasks add ``(ewc_lambda / 2) * sum_k F_k (W_b - W_b^k)^2``
              to the loss (its gradient reaches ``W_h`` straight through);
``random``    random consolidation, the thesis' control (Table 2.1, section 2.8): ``ewc`` with the
              same penalty, ``ewc_lambda``, Fisher estimate and anchors, but each layer's ``F_k``
              is shuffled across that layer's synapses before it is stored
              (:func:`shuffle_importance`, seeded from ``seed`` and ``k``): as much consolidation,
              on synapses chosen at random;
``lr_decay``  Adam with the learning rate divided by ``lr_decay`` at each new task (thesis: 10);
``complex``   (not in the default list) the four-hidden-variable synapse of thesis section 2.6
              (eq. 2.8): Adam's step drives ``W1``, ``W2..W4`` diffuse behind it with a leak
              and a feedback from ``W4`` (:class:`~nmflow.golden.metaplastic.ComplexSynapseRule`;
              ``complex_options`` defaults to the thesis' rates times 40, for ~300-step tasks);
``meta_fixed`` (``fixed_point=True``) the metaplastic run with hidden weights stored in fixed
              point and updated by :class:`~nmflow.golden.metafixed.MetaFixedRule` (Adam's moments
              in float, its step quantized as ``U``).

Network: ``QuantLinear`` layers with binary weights ``+1 if W_h >= 0 else -1`` and no bias, a
BatchNorm after every layer, sign activations (``+1 if y >= 0``, gradient where ``|y| <= 1``)
after every hidden BatchNorm, none after the last; the first layer reads the raw integer pixels.
BatchNorm is task-specific (as in the paper: its parameters cannot be consolidated): each task has
its own BatchNorm layers, started as a copy of the previous task's and frozen after the task;
evaluating task ``k`` uses task ``k``'s BatchNorm with its running statistics (``bn_stats =
"running"``, what hardware folds into thresholds) or the test batch's statistics (``"batch"``).
Adam's moments restart at every task.

*Stream learning* (:func:`run_stream`, thesis Fig. 2.5): one dataset split into class-balanced
subsets learned one after the other (no revisits); the test accuracy after each subset is compared
with the same network trained on the whole training set for the same number of steps.

Everything runs on one CPU thread; the same settings give the same numbers.
"""

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import NmflowError, check_choice, check_int, check_number
from .layers import QuantLinear, binarize, flushing_denormals, sign_activation
from .metaplastic import (COMPLEX_SHORT_TASKS, DEFAULT_WEIGHT_DECAY, ComplexSynapseRule,
                          MetaplasticAdam, check_m, layer_groups)

__all__ = ["DEFAULT_METHODS", "ContinualConfig", "ContinualNet", "permutations", "run_continual",
           "continual_plan", "continual_run", "continual_result", "run_stream",
           "fisher_binary", "shuffle_importance", "class_balanced_subsets", "METHODS",
           "BN_STATS"]

#: Methods a config may name; ``complex`` (the four-variable synapse of thesis section 2.6,
#: settings ``complex_options``) is not in the default list. ``random`` (random consolidation)
#: is: it costs one EWC-sized run, about +25 % on the default run's time.
METHODS = ("plain", "meta", "ewc", "random", "lr_decay", "complex")
DEFAULT_METHODS = ("plain", "meta", "ewc", "random", "lr_decay")
BN_STATS = ("running", "batch")


@dataclass(frozen=True)
class ContinualConfig:
    """Settings of a permuted-task experiment (defaults: see docs/metaplastic.md for why)."""
    #: Number of tasks (task 1 is the unpermuted dataset).
    tasks: int = 5
    #: Adam steps per task.
    steps: int = 600
    #: Images per step.
    batch: int = 100
    #: Hidden layer sizes.
    hidden: tuple = (256, 256)
    #: Adam learning rate.
    lr: float = 0.005
    #: Values of m, one ``meta`` run each.
    ms: tuple = (5.0, 20.0, 40.0)
    #: Methods to run (``meta`` once per m).
    methods: tuple = DEFAULT_METHODS
    #: Seed of the weights, the batch order and the permutations.
    seed: int = 0
    #: f_meta: ``"tanh"`` (eq. 2.13) or ``"hard"`` (appendix A.4, m is the threshold).
    fmeta: str = "tanh"
    #: EWC strength (thesis: 5e3).
    ewc_lambda: float = 5e3
    #: Training images used for each Fisher estimate.
    fisher_samples: int = 300
    #: Learning-rate divisor per new task for ``lr_decay`` (thesis: 10).
    lr_decay: float = 10.0
    #: Coupled weight decay of Adam.
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    #: Accuracy measurements per task for the curves (the last one is at the task's end).
    evals_per_task: int = 6
    #: BatchNorm statistics at evaluation: ``"running"`` or ``"batch"`` (test batch).
    bn_stats: str = "running"
    #: Also run every ``meta`` run with the fixed-point twin in the loop (``meta_fixed``).
    fixed_point: bool = False
    #: Settings of the fixed-point twin (keyword arguments of MetaFixedRule besides m).
    fixed_options: dict = field(default_factory=dict)
    #: Settings of the ``complex`` synapse (keyword arguments of ComplexSynapseRule; missing
    #: ones take the thesis' values). Default: the thesis' timescales shortened for ~300-step
    #: tasks (``COMPLEX_SHORT_TASKS``; tuned on digits, see docs/metaplastic.md).
    complex_options: dict = field(default_factory=lambda: dict(COMPLEX_SHORT_TASKS))

    def __post_init__(self):
        hidden = tuple(self.hidden) if isinstance(self.hidden, list) else self.hidden
        object.__setattr__(self, "hidden", hidden)
        if not isinstance(hidden, tuple) or not hidden or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in hidden):
            raise NmflowError(f"hidden must be positive integers, not {self.hidden!r}")
        for name in ("tasks", "steps", "batch", "fisher_samples", "evals_per_task"):
            check_int(name, getattr(self, name), 1)
        if self.batch < 2:
            raise NmflowError(f"batch must be at least 2 (BatchNorm), not {self.batch!r}")
        check_int("seed", self.seed, 0)
        if self.seed >= 2 ** 31:
            raise NmflowError(f"seed must be below 2**31, not {self.seed!r}")
        check_number("lr", self.lr, above=0.0)
        check_number("ewc_lambda", self.ewc_lambda, 0.0)
        check_number("lr_decay", self.lr_decay, 1.0)
        check_number("weight_decay", self.weight_decay, 0.0)
        ms = tuple(self.ms) if isinstance(self.ms, list) else self.ms
        object.__setattr__(self, "ms", tuple(check_m(m) for m in ms))
        methods = tuple(self.methods) if isinstance(self.methods, list) else self.methods
        if not methods:
            raise NmflowError("methods must name at least one of " + ", ".join(METHODS))
        for method in methods:
            check_choice("methods", method, METHODS)
        object.__setattr__(self, "methods", methods)
        if "meta" in methods and not self.ms:
            raise NmflowError("ms must hold at least one m for the meta method, not none")
        check_choice("fmeta", self.fmeta, ("tanh", "hard"))
        check_choice("bn_stats", self.bn_stats, BN_STATS)
        for name in ("fixed_options", "complex_options"):
            if not isinstance(getattr(self, name), dict):
                raise NmflowError(f"{name} must be a dict, not {getattr(self, name)!r}")

    def to_dict(self):
        out = asdict(self)
        for key in ("hidden", "ms", "methods"):
            out[key] = list(out[key])
        out["fixed_options"] = {k: (v.to_dict() if hasattr(v, "to_dict") else v)
                                for k, v in self.fixed_options.items()}
        return out


class ContinualNet(nn.Module):
    """Binary-weight network with one set of BatchNorm layers per task.

    Parameters
    ----------
    sizes : list of int
        Inputs, hidden sizes, classes.
    tasks : int
        Number of BatchNorm sets.
    """

    def __init__(self, sizes, tasks=1):
        super().__init__()
        self.sizes = [int(n) for n in sizes]
        self.linears = nn.ModuleList(QuantLinear(a, b, "binary")
                                     for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm1d(n) for n in self.sizes[1:])
                                   for _ in range(tasks))
        self.task = 0

    def set_task(self, task, copy_from_previous=False):
        """Use task ``task``'s BatchNorm from now on (optionally started as task-1's copy)."""
        if copy_from_previous and task > 0:
            self.norms[task].load_state_dict(self.norms[task - 1].state_dict())
        self.task = task

    def forward(self, x):
        h = x
        last = len(self.linears) - 1
        for index, (linear, norm) in enumerate(zip(self.linears, self.norms[self.task])):
            h = norm(linear(h))
            if index < last:
                h = sign_activation(h)
        return h

    def shared_weights(self):
        return [linear.weight for linear in self.linears]

    def task_parameters(self, task):
        return list(self.norms[task].parameters())


def permutations(tasks, features, seed):
    """Pixel permutations of the tasks: the identity first, then random ones from ``seed``."""
    rng = np.random.default_rng([seed, 0x9E3779B9])
    out = [np.arange(features)]
    for _ in range(tasks - 1):
        out.append(rng.permutation(features))
    return out


@torch.no_grad()
def _accuracy(net, x, y, task, bn_stats):
    net.set_task(task)
    net.train(bn_stats == "batch")
    if bn_stats == "batch":                       # batch statistics without touching running ones
        saved = [norm.momentum for norm in net.norms[task]]
        for norm in net.norms[task]:
            norm.momentum = 0.0
    logits = net(x)
    if bn_stats == "batch":
        for norm, momentum in zip(net.norms[task], saved):
            norm.momentum = momentum
    net.eval()
    return float((logits.argmax(1) == y).float().mean())


def fisher_binary(net, x, y, task):
    """Diagonal empirical Fisher of the binary weights on images ``x`` (task's BatchNorm, eval).

    Returns one tensor per layer: the mean over images of ``(d log p(y|x) / d W_b)^2``; with the
    straight-through estimator the gradient with respect to ``W_b`` is the one ``W_h`` receives.
    """
    net.set_task(task)
    net.eval()
    weights = net.shared_weights()
    fisher = [torch.zeros_like(w) for w in weights]
    for i in range(len(y)):
        net.zero_grad(set_to_none=True)
        logp = torch.log_softmax(net(x[i:i + 1]), dim=1)[0, y[i]]
        grads = torch.autograd.grad(logp, weights)
        for f, g in zip(fisher, grads):
            f += g * g
    return [f / len(y) for f in fisher]


def shuffle_importance(fisher, seed, task):
    """Random consolidation's importances: each layer's Fisher shuffled across its synapses.

    Parameters
    ----------
    fisher : list of torch.Tensor
        One importance tensor per layer (:func:`fisher_binary`).
    seed : int
        The run's seed.
    task : int
        Index of the task the importances belong to (0 for task 1).

    Returns
    -------
    list of torch.Tensor
        Per layer, the same values and shape, at positions given by a random permutation of that
        layer's synapses; one ``torch.Generator`` seeded with ``seed + 2000 + task`` draws the
        layers' permutations in order, so the same arguments give the same result.
    """
    check_int("seed", seed, 0)
    check_int("task", task, 0)
    gen = torch.Generator().manual_seed(int(seed) + 2000 + int(task))
    out = []
    for f in fisher:
        order = torch.randperm(f.numel(), generator=gen)
        out.append(f.reshape(-1)[order].reshape(f.shape))
    return out


def _binary(w):
    return torch.where(w >= 0, 1.0, -1.0)


def _task_data(dataset, perm):
    x_train = torch.as_tensor(np.asarray(dataset.x_train)[:, perm], dtype=torch.float32)
    x_test = torch.as_tensor(np.asarray(dataset.x_test)[:, perm], dtype=torch.float32)
    return (x_train, torch.as_tensor(np.asarray(dataset.y_train), dtype=torch.int64),
            x_test, torch.as_tensor(np.asarray(dataset.y_test), dtype=torch.int64))


class _Batches:
    """Endless shuffled batches over ``n`` images (a new permutation per epoch)."""

    def __init__(self, n, batch, generator):
        self.n, self.batch, self.gen = n, min(batch, n), generator
        self.order, self.at = torch.randperm(n, generator=generator), 0

    def next(self):
        if self.at + self.batch > self.n:
            self.order, self.at = torch.randperm(self.n, generator=self.gen), 0
        index = self.order[self.at:self.at + self.batch]
        self.at += self.batch
        return index


def _fixed_rule(m, config):
    """The fixed-point twin for ``m`` with the config's f_meta and ``fixed_options``."""
    from .metafixed import MetaFixedRule
    return MetaFixedRule(m, **{"kind": config.fmeta, **config.fixed_options})


def _one_run(config, dataset, method, m, perms, classes, progress=None, fixed=False):
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed + 1)
    sizes = [dataset.x_train.shape[1], *config.hidden, classes]
    net = ContinualNet(sizes, config.tasks)
    data = [_task_data(dataset, perm) for perm in perms]
    eval_at = sorted({max(1, round(config.steps * (k + 1) / config.evals_per_task))
                      for k in range(config.evals_per_task)})
    loss_fn = nn.CrossEntropyLoss()
    ewc_terms = []                                    # (fisher list, binary weights list)
    curve_steps, curve_acc, matrix = [], [], []
    start = time.perf_counter()
    step_total = 0
    synapse = ComplexSynapseRule(**config.complex_options) if method == "complex" else None
    for task in range(config.tasks):
        net.set_task(task, copy_from_previous=True)
        lr = config.lr * (1.0 / config.lr_decay) ** task if method == "lr_decay" else config.lr
        groups = layer_groups(nn.ModuleList([*net.linears, *net.norms[task]]),
                              m if method == "meta" else 0.0, config.fmeta)
        rule = _fixed_rule(m, config).torch_rule() if fixed else synapse
        optimizer = MetaplasticAdam(groups, lr=lr, weight_decay=config.weight_decay,
                                    fmeta=config.fmeta, weight_rule=rule)
        x_train, y_train, _, _ = data[task]
        batches = _Batches(len(y_train), config.batch, gen)
        for step in range(1, config.steps + 1):
            net.train()
            index = batches.next()
            loss = loss_fn(net(x_train[index]), y_train[index])
            if ewc_terms:
                penalty = 0.0
                for fisher, anchors in ewc_terms:
                    for w, f, a in zip(net.shared_weights(), fisher, anchors):
                        penalty = penalty + (f * (binarize(w) - a) ** 2).sum()
                loss = loss + 0.5 * config.ewc_lambda * penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step_total += 1
            if step in eval_at:
                accs = [_accuracy(net, data[k][2], data[k][3], k, config.bn_stats)
                        for k in range(config.tasks)]
                net.set_task(task)
                curve_steps.append(step_total)
                curve_acc.append(accs)
        matrix.append(curve_acc[-1])
        if method in ("ewc", "random") and task < config.tasks - 1:
            gen_f = torch.Generator().manual_seed(config.seed + 1000 + task)
            pick = torch.randperm(len(y_train), generator=gen_f)[:config.fisher_samples]
            fisher = fisher_binary(net, x_train[pick], y_train[pick], task)
            if method == "random":
                fisher = shuffle_importance(fisher, config.seed, task)
            ewc_terms.append(([f.detach() for f in fisher],
                              [_binary(w.detach()) for w in net.shared_weights()]))
            net.set_task(task)
        if progress is not None:
            progress(method, m, task + 1, config.tasks)
    seconds = time.perf_counter() - start
    hidden_abs = [float(w.detach().abs().mean()) for w in net.shared_weights()]
    final = matrix[-1]
    return {"method": "meta_fixed" if fixed else method, "m": m, "final": final,
            "mean_final": float(np.mean(final)), "learned": [matrix[k][k]
                                                              for k in range(config.tasks)],
            "matrix": matrix, "curve": {"steps": curve_steps, "accuracy": curve_acc},
            "mean_abs_hidden": hidden_abs, "seconds": seconds, "seed": config.seed}


def _check_dataset(dataset):
    for name in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(dataset, name):
            raise NmflowError(f"dataset must have member {name!r} (a nmflow Dataset), "
                              f"not {type(dataset).__name__}")
    if len(dataset.y_train) < 2 or len(dataset.y_test) < 1:
        raise NmflowError("dataset must hold at least 2 training and 1 test images, not "
                          f"{len(dataset.y_train)} and {len(dataset.y_test)}")


@flushing_denormals
def run_continual(config, dataset, progress=None):
    """Run every method of ``config`` on permuted versions of ``dataset``.

    Parameters
    ----------
    config : ContinualConfig
    dataset : nmflow.golden.datasets.Dataset
    progress : callable, optional
        ``progress(method, m, tasks_done, tasks)`` after every task of every run.

    Returns
    -------
    dict with ``settings`` (the config), ``dataset`` (``dataset.info()`` when it has one),
    ``permutation_seed``, ``chance`` and ``runs``: one dict per run with ``method``, ``m``,
    ``final`` (accuracy of each task after the last task, fractions), ``mean_final``, ``learned``
    (each task right after it was learned), ``matrix``, ``curve`` (``steps``, ``accuracy``
    [evaluations][tasks]), ``mean_abs_hidden`` (per layer, at the end), ``seconds`` and ``seed``;
    with ``fixed_point`` also ``fixed_vs_float``: per m the fixed-point rule's settings, its table
    error and the mean / task-1 final accuracy of the float and fixed-point runs.
    """
    runs = [continual_run(config, dataset, method, m, fixed, progress)
            for method, m, fixed in continual_plan(config, dataset)]
    return continual_result(config, dataset, runs)


def continual_plan(config, dataset):
    """The runs of ``config``, in order: ``(method, m, fixed_point)``; refuses a bad config or
    data set in one line."""
    if not isinstance(config, ContinualConfig):
        raise NmflowError(f"config must be a ContinualConfig, not {type(config).__name__}")
    _check_dataset(dataset)
    plan = []
    for method in config.methods:
        if method == "meta":
            plan.extend(("meta", m, False) for m in config.ms)
            if config.fixed_point:
                plan.extend(("meta", m, True) for m in config.ms)
        else:
            plan.append((method, 0.0, False))
    return plan


def continual_run(config, dataset, method, m, fixed, progress=None):
    """One run of :func:`run_continual` (each run draws from its own seeds: runs can go in any
    order, or in parallel)."""
    torch.set_num_threads(1)
    classes = int(max(np.max(dataset.y_train), np.max(dataset.y_test))) + 1
    perms = permutations(config.tasks, np.asarray(dataset.x_train).shape[1], config.seed)
    return _one_run(config, dataset, method, m, perms, classes, progress, fixed)


def continual_result(config, dataset, runs):
    """The result of :func:`run_continual` from its runs, in :func:`continual_plan`'s order."""
    classes = int(max(np.max(dataset.y_train), np.max(dataset.y_test))) + 1
    info = dataset.info() if hasattr(dataset, "info") else {}
    result = {"dataset": info, "settings": config.to_dict(), "chance": 1.0 / classes,
              "runs": runs}
    if config.fixed_point:
        result["fixed_vs_float"] = _fixed_vs_float(config, runs)
    return result


def _fixed_vs_float(config, runs):
    """Per m: the fixed-point run against the float one (means and task 1, in fractions)."""
    out = []
    for m in config.ms:
        float_run = next(r for r in runs if r["method"] == "meta" and r["m"] == m)
        fixed_run = next(r for r in runs if r["method"] == "meta_fixed" and r["m"] == m)
        rule = _fixed_rule(m, config)
        out.append({"m": m, "rule": rule.describe(), "table_error": rule.table_error(),
                    "mean_float": float_run["mean_final"], "mean_fixed": fixed_run["mean_final"],
                    "mean_difference": fixed_run["mean_final"] - float_run["mean_final"],
                    "task1_float": float_run["final"][0], "task1_fixed": fixed_run["final"][0]})
    return out


def class_balanced_subsets(y, subsets, seed):
    """Split indices ``0..len(y)-1`` into ``subsets`` disjoint parts with every class spread
    evenly (each class's shuffled indices dealt round-robin, the deal continuing from class to
    class, so part sizes and per-class counts differ by at most one); refuses more subsets than the
    rarest class has images."""
    y = np.asarray(y)
    check_int("subsets", subsets, 1)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if subsets > present.min():
        raise NmflowError(f"subsets must be at most {int(present.min())} (images of the rarest "
                          f"class), not {subsets}")
    rng = np.random.default_rng([seed, 0x5EED])
    parts = [[] for _ in range(subsets)]
    k = 0                                   # the deal goes on across classes: sizes differ by 1
    for c in np.flatnonzero(counts):
        for i in rng.permutation(np.flatnonzero(y == c)):
            parts[k % subsets].append(int(i))
            k += 1
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


@flushing_denormals
def run_stream(dataset, subsets=10, steps=200, ms=(0.0, 5.0), hidden=(512, 512), batch=100,
               lr=0.005, seed=0, weight_decay=DEFAULT_WEIGHT_DECAY):
    """Stream learning (thesis Fig. 2.5): learn ``dataset`` as ``subsets`` class-balanced parts,
    ``steps`` Adam steps each, in order and without revisits, for each ``m`` in ``ms``; compare
    with training on the whole training set for ``subsets * steps`` steps (m = 0).

    Returns a dict: ``subsets``, ``steps``, ``runs`` (``m``, ``accuracy`` after each subset,
    ``final``) and ``baseline`` (``accuracy`` at the same step counts, ``final``).
    """
    _check_dataset(dataset)
    check_int("steps", steps, 1)
    check_int("batch", batch, 1)
    torch.set_num_threads(1)
    classes = int(max(np.max(dataset.y_train), np.max(dataset.y_test))) + 1
    x_train, y_train, x_test, y_test = _task_data(dataset, np.arange(dataset.x_train.shape[1]))
    parts = class_balanced_subsets(np.asarray(dataset.y_train), subsets, seed)
    sizes = [x_train.shape[1], *hidden, classes]
    loss_fn = nn.CrossEntropyLoss()

    def train(m, index_sets):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        net = ContinualNet(sizes, 1)
        curve = []
        optimizer = MetaplasticAdam(layer_groups(net, check_m(m)), lr=lr,
                                    weight_decay=weight_decay)
        for index_set in index_sets:
            index_set = torch.as_tensor(index_set)
            batches = _Batches(len(index_set), batch, gen)
            for _ in range(steps):
                net.train()
                pick = index_set[batches.next()]
                loss = loss_fn(net(x_train[pick]), y_train[pick])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            curve.append(_accuracy(net, x_test, y_test, 0, "running"))
        return curve

    runs = []
    for m in ms:
        curve = train(m, parts)
        runs.append({"m": float(m), "accuracy": curve, "final": curve[-1]})
    full = np.arange(len(y_train))
    baseline = train(0.0, [full] * subsets)
    return {"subsets": subsets, "steps": steps, "subset_sizes": [len(p) for p in parts],
            "runs": runs, "baseline": {"m": 0.0, "accuracy": baseline, "final": baseline[-1]}}
