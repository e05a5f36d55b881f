"""Datasets for the flow: scikit-learn's bundled digits (the default), MNIST-format IDX files and
CIFAR-10's binary batches.

Every dataset is a :class:`Dataset` of unsigned integer inputs, exactly what the hardware reads:
``x`` is ``uint8 [N, features]`` with values below ``2 ** input_bits``, ``y`` is ``int64 [N]``.
Nothing here downloads anything: digits ships with scikit-learn, IDX files and CIFAR-10 batches
come from a user path. Each dataset also states its images' geometry, ``shape`` = (channels,
height, width); ``x``'s features are the pixels in that order (channel by channel, rows in each).

The split into train and test images is stratified (every class keeps its share in both parts) and
fixed by ``seed``, so the same call gives the same split on every machine.
"""

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NmflowError

__all__ = ["Dataset", "load_digits", "read_idx", "load_idx", "IDX_IMAGES", "IDX_LABELS",
           "read_cifar10_batch", "load_cifar10", "CIFAR10_SHAPE"]

#: Magic number of an IDX file of unsigned bytes with three dimensions (images).
IDX_IMAGES = 0x00000803
#: Magic number of an IDX file of unsigned bytes with one dimension (labels).
IDX_LABELS = 0x00000801
IDX_UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
N_CLASSES = 10
#: A CIFAR-10 image: 3 channels (red, green, blue) of 32 x 32 pixels.
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_TRAIN = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
CIFAR10_TEST = "test_batch.bin"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Integer inputs and class labels, split into a train and a test part.

    Members
    -------
    x_train, x_test : uint8 ndarray [N, features]
        Unsigned integer inputs, each below ``2 ** input_bits``.
    y_train, y_test : int64 ndarray [N]
        Class labels, 0 to ``n_classes - 1``.
    input_bits : int
        Width of the unsigned inputs (5 for digits, whose pixels are 0 to 16; 8 for MNIST).
    name : str
        Where the data came from (``"digits"``, ``"idx:<images file>"`` or
        ``"cifar10:<folder>"``).
    shape : tuple of int or None
        The images' geometry, (channels, height, width), whose product is the feature count;
        None for data that are not images.
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_bits: int
    name: str
    shape: tuple | None = None

    @property
    def n_features(self):
        return int(self.x_train.shape[1])

    @property
    def n_classes(self):
        return int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1

    def info(self):
        """A JSON-serialisable summary (for checkpoints and hardware-model provenance)."""
        info = {"name": self.name, "input_bits": self.input_bits, "features": self.n_features,
                "classes": self.n_classes, "train": int(len(self.y_train)),
                "test": int(len(self.y_test))}
        if self.shape is not None:
            info["shape"] = list(self.shape)
        return info


def _check_split(seed, test_size):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise NmflowError(f"seed must be a non-negative integer, not {seed!r}")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) \
            or not 0.0 < test_size < 1.0:
        raise NmflowError(f"test_size must be a fraction strictly between 0 and 1, "
                          f"not {test_size!r}")


def _split(x, y, seed, test_size, name, input_bits, shape=None):
    from sklearn.model_selection import train_test_split

    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=test_size, stratify=y, random_state=int(seed))
    except ValueError as error:
        # scikit-learn refuses a stratified split when a class has fewer than two images or when
        # the test part cannot hold one image of every class.
        message = str(error).splitlines()[0]
        raise NmflowError(f"dataset {name!r} cannot be split with test_size={test_size!r} "
                          f"keeping every class in both parts ({message})") from None
    return Dataset(x_train=np.ascontiguousarray(x_train, dtype=np.uint8),
                   y_train=np.ascontiguousarray(y_train, dtype=np.int64),
                   x_test=np.ascontiguousarray(x_test, dtype=np.uint8),
                   y_test=np.ascontiguousarray(y_test, dtype=np.int64),
                   input_bits=input_bits, name=name, shape=shape)


def load_digits(seed=0, test_size=0.2):
    """scikit-learn's bundled 8x8 digits (1,797 images), as raw integer pixels.

    Parameters
    ----------
    seed : int
        Random state of the stratified split.
    test_size : float
        Fraction of the images kept for the test part (0.2 gives 360 test and 1,437 train images).

    Returns
    -------
    Dataset
        64 features of 0 to 16 (``input_bits`` = 5), labels 0 to 9, ``name`` = ``"digits"``.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    _check_split(seed, test_size)
    bunch = sklearn_digits()
    x = bunch.data.astype(np.uint8)  # pixels are the integers 0..16 stored as float64
    y = bunch.target.astype(np.int64)
    return _split(x, y, seed, test_size, "digits", input_bits=5, shape=(1, 8, 8))


def _read_bytes(path, kind="IDX file"):
    path = Path(path)
    if not path.is_file():
        raise NmflowError(f"{kind} {str(path)!r} does not exist")
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise NmflowError(f"{kind} {str(path)!r} is gzip data that cannot be decompressed "
                              f"(truncated or corrupt: {error})") from None
    return data


def read_idx(path, magic=None):
    """Read one MNIST-format IDX file of unsigned bytes, gzipped or raw.

    Gzip is recognised by its magic bytes (``1f 8b``), not by the file name. The header is two zero
    bytes, a type byte (must be ``0x08``, unsigned byte), the number of dimensions, then each
    dimension as a big-endian 32-bit integer; the data that follows must hold exactly the product of
    the dimensions in bytes.

    Parameters
    ----------
    path : str or Path
    magic : int, optional
        The magic number the file must carry (:data:`IDX_IMAGES` or :data:`IDX_LABELS`); any
        unsigned-byte IDX file is accepted when omitted.

    Returns
    -------
    uint8 ndarray
        Shaped as the header declares.

    Raises
    ------
    NmflowError
        One line naming the file, the rule and the bad value, when the file is missing, not gzip
        data it claims to be, has a bad magic number or type byte, or is truncated or too long.
    """
    data = _read_bytes(path)
    name = str(path)
    if len(data) < 4:
        raise NmflowError(f"IDX file {name!r} must start with a 4-byte magic number, "
                          f"not {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise NmflowError(f"IDX file {name!r} magic number must start with two zero bytes, "
                          f"not 0x{found:08x}")
    if data[2] != IDX_UBYTE:
        raise NmflowError(f"IDX file {name!r} type byte must be 0x{IDX_UBYTE:02x} (unsigned byte), "
                          f"not 0x{data[2]:02x}")
    if magic is not None and found != magic:
        raise NmflowError(f"IDX file {name!r} must have magic number 0x{magic:08x} "
                          f"({magic & 0xff}-D unsigned bytes), not 0x{found:08x}")
    ndim = data[3]
    if ndim < 1:
        raise NmflowError(f"IDX file {name!r} must have at least one dimension, not {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise NmflowError(f"IDX file {name!r} header must hold {ndim} dimensions ({header} bytes), "
                          f"not {len(data)} bytes (truncated)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)            # Python integers: no overflow
    body = len(data) - header
    if body != expected:
        rule = "truncated" if body < expected else "trailing bytes"
        raise NmflowError(f"IDX file {name!r} must hold {expected} data bytes for shape "
                          f"{list(shape)}, not {body} ({rule})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_idx(images, labels, seed=0, test_size=0.2):
    """A dataset from a pair of MNIST-format IDX files (for example MNIST's t10k files).

    Parameters
    ----------
    images : str or Path
        IDX file of magic :data:`IDX_IMAGES`: unsigned bytes of shape ``[N, rows, cols]``.
    labels : str or Path
        IDX file of magic :data:`IDX_LABELS`: ``N`` unsigned bytes, each 0 to 9.
    seed, test_size
        As in :func:`load_digits`.

    Returns
    -------
    Dataset
        ``rows * cols`` features of 0 to 255 (``input_bits`` = 8), ``name`` = ``"idx:<images>"``.

    Raises
    ------
    NmflowError
        A bad file (see :func:`read_idx`), a label count different from the image count, a label
        outside 0 to 9, or a split that cannot keep every class in both parts.
    """
    _check_split(seed, test_size)
    x = read_idx(images, magic=IDX_IMAGES)
    y = read_idx(labels, magic=IDX_LABELS)
    if len(y) != len(x):
        raise NmflowError(f"IDX labels {str(labels)!r} must count as many labels as there are "
                          f"images ({len(x)}), not {len(y)}")
    if len(x) == 0:
        raise NmflowError(f"IDX images {str(images)!r} must hold at least one image, not 0")
    bad = y >= N_CLASSES
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise NmflowError(f"IDX labels {str(labels)!r} must be 0 to {N_CLASSES - 1}, "
                          f"not {int(y[index])} (label {index})")
    shape = (1, *x.shape[1:]) if x.ndim == 3 else None
    x = x.reshape(len(x), -1)
    return _split(x, y.astype(np.int64), seed, test_size, f"idx:{Path(images).name}",
                  input_bits=8, shape=shape)


def read_cifar10_batch(path):
    """Read one batch file of CIFAR-10's binary version (``data_batch_N.bin``, ``test_batch.bin``):
    records of one label byte (0 to 9) then 3,072 pixel bytes, the red, green and blue planes of
    a 32 x 32 image, each row by row. Gzip is recognised by its magic bytes.

    Returns
    -------
    (uint8 ndarray [N, 3072], int64 ndarray [N])
        The pixels (channel, row, column order) and the labels.

    Raises
    ------
    NmflowError
        One line naming the file, the rule and the bad value: a missing file, an empty one, a
        length that is not a whole number of 3,073-byte records, or a label above 9.
    """
    data = _read_bytes(path, "CIFAR-10 batch")
    name = str(path)
    if len(data) == 0 or len(data) % CIFAR10_RECORD:
        raise NmflowError(f"CIFAR-10 batch {name!r} must hold whole records of {CIFAR10_RECORD} "
                          f"bytes (a label and 3 x 32 x 32 pixels), not {len(data)} bytes")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    y = records[:, 0].astype(np.int64)
    bad = y >= N_CLASSES
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise NmflowError(f"CIFAR-10 batch {name!r} labels must be 0 to {N_CLASSES - 1}, "
                          f"not {int(y[index])} (record {index})")
    return np.ascontiguousarray(records[:, 1:]), y


def load_cifar10(folder, seed=0, test_size=0.2):
    """CIFAR-10 from a folder holding its binary batches, as a user has them (nothing is
    downloaded).

    The training images are every ``data_batch_1.bin`` ... ``data_batch_5.bin`` in ``folder``
    (at least one); the test images ``test_batch.bin`` when it is there, else a stratified
    ``test_size`` split of the training batches by ``seed`` (as for IDX files).

    Returns
    -------
    Dataset
        3,072 features of 0 to 255 (``input_bits`` = 8), ``shape`` (3, 32, 32),
        ``name`` = ``"cifar10:<folder>"``.

    Raises
    ------
    NmflowError
        A folder that does not exist or holds no training batch, a bad batch
        (:func:`read_cifar10_batch`), or a split that cannot keep every class in both parts.
    """
    _check_split(seed, test_size)
    folder = Path(folder)
    if not folder.is_dir():
        raise NmflowError(f"CIFAR-10 folder {str(folder)!r} does not exist")
    batches = [folder / n for n in CIFAR10_TRAIN if (folder / n).is_file()]
    if not batches:
        raise NmflowError(f"CIFAR-10 folder {str(folder)!r} must hold data_batch_1.bin ... "
                          f"data_batch_5.bin (at least one), not none of them")
    parts = [read_cifar10_batch(path) for path in batches]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    name = f"cifar10:{folder.name}"
    if not (folder / CIFAR10_TEST).is_file():
        return _split(x, y, seed, test_size, name, input_bits=8, shape=CIFAR10_SHAPE)
    x_test, y_test = read_cifar10_batch(folder / CIFAR10_TEST)
    return Dataset(x_train=x, y_train=y, x_test=x_test, y_test=y_test, input_bits=8, name=name,
                   shape=CIFAR10_SHAPE)
