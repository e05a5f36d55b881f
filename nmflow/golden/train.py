"""Training of the float BNN/TNN models (:mod:`nmflow.golden.layers`) and their checkpoints.

``train(config, dataset)`` builds a :class:`~nmflow.golden.layers.QuantNet` of
``[features, *config.hidden, classes]`` neurons and trains it with Adam and cross-entropy on one
CPU thread; the same configuration and dataset give the same network, bit for bit.

A checkpoint (``model.pt``) holds the hidden weights and BatchNorm state, the configuration, the
optimizer state, the history and a summary of the dataset; :func:`load_checkpoint` rebuilds the
network from it and refuses a missing, corrupt or foreign file with one line.
"""

import io
import math
import pickle
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import limits
from ..errors import NmflowError, check_choice, check_int, check_number
from ..fileio import write_bytes
from .layers import ACTIVATIONS, WEIGHT_KINDS, QuantNet, flushing_denormals

__all__ = ["TrainConfig", "History", "Checkpoint", "train", "evaluate", "predict",
           "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "nmflow.checkpoint"
CHECKPOINT_VERSION = 1
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run.

    The defaults train the small TNN 64-128-128-10 on digits; ``TrainConfig.bnn()`` gives the
    matching BNN.
    """
    #: Neurons of each hidden layer; the input and class counts come from the dataset.
    hidden: tuple = (128, 128)
    #: ``"ternary"`` (weights in {-1, 0, +1}) or ``"binary"`` (weights in {-1, +1}).
    weight_kind: str = "ternary"
    #: Hidden activation: ``"ternary"`` ({-1, 0, +1}) or ``"sign"`` ({-1, +1}).
    activation: str = "ternary"
    #: Passes over the training images.
    epochs: int = 50
    #: Adam's (initial) learning rate.
    lr: float = 0.005
    #: Learning-rate schedule over all steps: ``"constant"`` or ``"cosine"`` (lr down to 0).
    schedule: str = "cosine"
    #: Images per Adam step (a last batch of a single image is skipped: BatchNorm needs two).
    batch: int = 100
    #: Seed of the weight initialisation and of the batch order.
    seed: int = 0
    #: Ternary weights: a hidden weight with ``|W_h| <= delta`` is 0.
    delta: float = 0.05
    #: Ternary activations: a BatchNorm output with ``|y| <= act_threshold`` gives 0.
    act_threshold: float = 0.5
    #: A layer string (:mod:`nmflow.golden.arch`, ``"c16k3-p2-f64-f10"``) instead of ``hidden``:
    #: convolutions, poolings and fully connected layers, the last one of one neuron per class.
    arch: str | None = None

    @classmethod
    def bnn(cls, **changes):
        """The default configuration with binary weights and sign activations."""
        return cls(**{"weight_kind": "binary", "activation": "sign", **changes})

    @classmethod
    def tnn(cls, **changes):
        """The default configuration with ternary weights and ternary activations."""
        return cls(**{"weight_kind": "ternary", "activation": "ternary", **changes})

    def __post_init__(self):
        hidden = self.hidden
        if isinstance(hidden, list):
            hidden = tuple(hidden)
            object.__setattr__(self, "hidden", hidden)
        if not isinstance(hidden, tuple):
            raise NmflowError(f"hidden must be a tuple of layer widths, not {self.hidden!r}")
        limits.check_widths("hidden", hidden)
        check_choice("weight_kind", self.weight_kind, WEIGHT_KINDS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("epochs", self.epochs, 1, limits.EPOCHS)
        check_int("batch", self.batch, 1, limits.BATCH)
        check_int("seed", self.seed, 0, limits.SEED)
        check_number("lr", self.lr, high=limits.LEARNING_RATE, above=0.0)
        check_number("delta", self.delta, 0.0)
        check_number("act_threshold", self.act_threshold, 0.0)
        if self.arch is not None:
            from .arch import arch_text, parse_arch
            object.__setattr__(self, "arch", arch_text(parse_arch(self.arch)))

    def planned_bytes(self, inputs, classes, images, shape=None):
        """The memory a run on ``images`` images of ``inputs`` features and ``classes`` classes
        plans for, in bytes: float32 hidden weights with their gradients, Adam's two moments
        and the quantized copies (6 values per weight), the activations of one batch kept for
        the backward pass (about 8 values per neuron, every map's pixels counted), and the
        dataset itself. ``shape`` is the images' geometry, for a layer string."""
        if self.arch is not None and shape is not None:
            from .arch import geometry, parse_arch
            layers = geometry(parse_arch(self.arch), shape)
            weights = sum(g.n_in * g.n_out for g in layers)
            neurons = inputs + sum(int(np.prod(g.conv_shape)) for g in layers)
        else:
            sizes = (inputs, *self.hidden, classes)
            weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
            neurons = sum(sizes)
        return 4 * (6 * weights + 8 * min(self.batch, images) * neurons + images * inputs)

    def to_dict(self):
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data):
        """Rebuild a configuration; refuse unknown or missing fields with one line."""
        if not isinstance(data, dict):
            raise NmflowError(f"training configuration must be a dict, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NmflowError(f"training configuration has unknown field {unknown[0]!r}")
        data = dict(data)
        if isinstance(data.get("hidden"), list):
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)


@dataclass(eq=False)
class History:
    """What happened during training, one entry per epoch.

    Members
    -------
    loss : list of float
        Mean training cross-entropy of the epoch (training-mode BatchNorm).
    train_accuracy : list of float
        Fraction of training images classified right during the epoch (training mode).
    test_accuracy : list of float
        Fraction of test images classified right after the epoch (eval mode).
    lr : list of float
        Learning rate of the epoch's last step.
    seconds : float
        Wall time of the whole run.
    optimizer_state : dict
        Adam's final state (for a checkpoint); not part of :meth:`to_dict`.
    """
    loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: float = 0.0
    optimizer_state: dict = field(default_factory=dict, repr=False)

    def to_dict(self):
        return {"loss": list(self.loss), "train_accuracy": list(self.train_accuracy),
                "test_accuracy": list(self.test_accuracy), "lr": list(self.lr),
                "seconds": float(self.seconds)}


def _inputs(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


@torch.no_grad()
def predict(net, x):
    """Classes (int64 ndarray [N]) the float model gives inputs ``x`` in eval mode."""
    _, logits = net.trace(_inputs(x))
    return logits.argmax(dim=1).numpy().astype(np.int64)


def evaluate(net, x, y):
    """Fraction (0 to 1) of inputs ``x`` that the float model in eval mode classifies as ``y``."""
    y = np.asarray(y)
    if len(y) == 0:
        raise NmflowError("y must hold at least one label, not 0")
    return float((predict(net, x) == y).mean())


def _check_dataset(dataset):
    for name in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(dataset, name):
            raise NmflowError(f"dataset must have member {name!r} (a nmflow Dataset), "
                              f"not {type(dataset).__name__}")
    if len(dataset.y_train) < 2:
        raise NmflowError(f"dataset must hold at least 2 training images, "
                          f"not {len(dataset.y_train)}")


@flushing_denormals
def train(config, dataset, progress=None):
    """Train a float BNN/TNN on ``dataset`` as ``config`` says.

    Runs on one CPU thread (``torch.set_num_threads(1)``, which stays set for the process; denormal
    floats are flushed to zero while it runs) and seeds torch's global generator with ``config.seed``; the
    batch order comes from a separate generator with the same seed. With the defaults on digits
    it takes 1.5 to 3 seconds.

    Parameters
    ----------
    config : TrainConfig
    dataset : nmflow.golden.datasets.Dataset
    progress : callable, optional
        Called after every epoch as ``progress(epoch, epochs, record)`` with ``record`` a dict of
        the epoch's ``loss``, ``train_accuracy``, ``test_accuracy`` and ``lr``.

    Returns
    -------
    net : QuantNet
        The trained network of ``[features, *config.hidden, classes]`` neurons, in eval mode.
    history : History
    """
    if not isinstance(config, TrainConfig):
        raise NmflowError(f"config must be a TrainConfig, not {type(config).__name__}")
    _check_dataset(dataset)
    classes = int(max(np.max(dataset.y_train), np.max(dataset.y_test))) + 1
    shape = getattr(dataset, "shape", None)
    if config.arch is not None:
        if shape is None:
            raise NmflowError(f"arch {config.arch!r} needs images: dataset "
                              f"{getattr(dataset, 'name', '?')!r} states no geometry")
        units = int(config.arch.rsplit("f", 1)[1])
        if units != classes:
            raise NmflowError(f"arch {config.arch!r} must end with f{classes} (one neuron per "
                              f"class of the dataset), not f{units}")
    what = config.arch or "-".join(map(str, (dataset.n_features, *config.hidden, classes)))
    limits.check_memory(
        f"training {what} on {len(dataset.y_train)} images in batches of {config.batch}",
        config.planned_bytes(dataset.n_features, classes, len(dataset.y_train), shape))
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    order = torch.Generator().manual_seed(config.seed)

    x = _inputs(dataset.x_train)
    y = torch.as_tensor(np.asarray(dataset.y_train), dtype=torch.int64)
    if config.arch is not None:
        net = QuantNet(None, config.weight_kind, config.activation, config.delta,
                       config.act_threshold, arch=config.arch, in_shape=shape)
    else:
        net = QuantNet([x.shape[1], *config.hidden, classes], config.weight_kind,
                       config.activation, config.delta, config.act_threshold)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    n = len(y)
    per_epoch = n // config.batch + (1 if n % config.batch >= 2 else 0)
    total = per_epoch * config.epochs
    loss_fn = nn.CrossEntropyLoss()
    history = History()
    start = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        net.train()
        permutation = torch.randperm(n, generator=order)
        loss_sum, right, seen = 0.0, 0, 0
        for first in range(0, n, config.batch):
            index = permutation[first:first + config.batch]
            if len(index) < 2:
                continue
            lr = config.lr
            if config.schedule == "cosine":
                lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = net(x[index])
            loss = loss_fn(logits, y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(index)
            right += int((logits.argmax(dim=1) == y[index]).sum())
            seen += len(index)
        record = {"loss": loss_sum / seen, "train_accuracy": right / seen,
                  "test_accuracy": evaluate(net, dataset.x_test, dataset.y_test), "lr": lr}
        for key, value in record.items():
            getattr(history, key).append(value)
        if progress is not None:
            progress(epoch + 1, config.epochs, record)
    net.eval()
    history.seconds = time.perf_counter() - start
    history.optimizer_state = optimizer.state_dict()
    return net, history


@dataclass(eq=False)
class Checkpoint:
    """A loaded checkpoint.

    Members
    -------
    net : QuantNet (eval mode)
    config : TrainConfig
    optimizer_state : dict
    history : dict (see :meth:`History.to_dict`)
    dataset : dict (see :meth:`nmflow.golden.datasets.Dataset.info`)
    """
    net: QuantNet
    config: TrainConfig
    optimizer_state: dict
    history: dict
    dataset: dict


def save_checkpoint(path, net, config, optimizer_state, history, dataset_info):
    """Write a float checkpoint atomically (a reader never sees half a file); return its path.

    Parameters
    ----------
    path : str or Path
    net : QuantNet
    config : TrainConfig
    optimizer_state : dict
        ``optimizer.state_dict()`` (``History.optimizer_state`` after :func:`train`).
    history : History or dict
    dataset_info : dict
        ``Dataset.info()``.
    """
    if isinstance(history, History):
        history = history.to_dict()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "net": net.describe(),
        "state_dict": net.state_dict(),
        "config": config.to_dict(),
        "optimizer_state": optimizer_state,
        "history": history,
        "dataset": dataset_info,
    }
    path = Path(path)
    # Serialised in memory first: torch's own writer reports a full disk as a RuntimeError
    # without the reason; the atomic write reports it in one line.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())
    return path


def _first_line(error):
    """The error's first sentence, at most 120 characters (torch's messages run long)."""
    if isinstance(error, (KeyError, IndexError)):      # torch's legacy reader on foreign bytes
        return "no torch archive or pickle in it"
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    line = line.split(". ")[0].rstrip(".")
    return line if len(line) <= 120 else line[:117] + "..."


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint` and rebuild its network.

    Loads with ``weights_only=True`` (no arbitrary code runs from the file).

    Returns
    -------
    Checkpoint

    Raises
    ------
    NmflowError
        One line when the file is missing, unreadable (truncated, corrupt), foreign (not an nmflow
        checkpoint), of another version, or holds weights that do not fit its own description.
    """
    path = Path(path)
    name = str(path)
    if path.is_dir():
        raise NmflowError(f"checkpoint {name!r} is a directory, not a checkpoint file")
    if not path.is_file():
        raise NmflowError(f"checkpoint {name!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            zipfile.BadZipFile, AttributeError, TypeError, KeyError, IndexError,
            UnicodeDecodeError) as error:
        raise NmflowError(f"checkpoint {name!r} is unreadable (truncated or not a torch file: "
                          f"{_first_line(error)})") from None
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != CHECKPOINT_FORMAT:
        raise NmflowError(f"checkpoint {name!r} must have format {CHECKPOINT_FORMAT!r}, "
                          f"not {found!r}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise NmflowError(f"checkpoint version must be {CHECKPOINT_VERSION}, "
                          f"not {payload.get('version')!r} (in {name!r})")
    try:
        config = TrainConfig.from_dict(payload.get("config"))
    except NmflowError as error:
        raise NmflowError(f"checkpoint {name!r} holds a bad configuration: {error}") from None
    describe = payload.get("net")
    if not isinstance(describe, dict):
        raise NmflowError(f"checkpoint {name!r} must describe its network, not {describe!r}")
    try:
        net = QuantNet(**describe)
        net.load_state_dict(payload.get("state_dict"))
    except (TypeError, RuntimeError, AttributeError) as error:
        raise NmflowError(f"checkpoint {name!r} weights do not fit its network "
                          f"{describe.get('sizes')!r} ({_first_line(error)})") from None
    net.eval()
    return Checkpoint(net=net, config=config, optimizer_state=payload.get("optimizer_state") or {},
                      history=payload.get("history") or {}, dataset=payload.get("dataset") or {})
