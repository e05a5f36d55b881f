"""Datasets for the flow: scikit-learn's bundled digits (the default) and MNIST-format IDX files.

Every dataset is a :class:`Dataset` of unsigned integer inputs, exactly what the hardware reads:
``x`` is ``uint8 [N, features]`` with values below ``2 ** input_bits``, ``y`` is ``int64 [N]``.
Nothing here downloads anything: digits ships with scikit-learn, IDX files come from a user path.

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

__all__ = ["Dataset", "load_digits", "read_idx", "load_idx", "IDX_IMAGES", "IDX_LABELS"]

#: Magic number of an IDX file of unsigned bytes with three dimensions (images).
IDX_IMAGES = 0x00000803
#: Magic number of an IDX file of unsigned bytes with one dimension (labels).
IDX_LABELS = 0x00000801
IDX_UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
N_CLASSES = 10


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
        Where the data came from (``"digits"`` or ``"idx:<images file>"``).
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_bits: int
    name: str

    @property
    def n_features(self):
        return int(self.x_train.shape[1])

    @property
    def n_classes(self):
        return int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1

    def info(self):
        """A JSON-serialisable summary (for checkpoints and hardware-model provenance)."""
        return {"name": self.name, "input_bits": self.input_bits, "features": self.n_features,
                "classes": self.n_classes, "train": int(len(self.y_train)),
                "test": int(len(self.y_test))}


def _check_split(seed, test_size):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise NmflowError(f"seed must be a non-negative integer, not {seed!r}")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) \
            or not 0.0 < test_size < 1.0:
        raise NmflowError(f"test_size must be a fraction strictly between 0 and 1, "
                          f"not {test_size!r}")


def _split(x, y, seed, test_size, name, input_bits):
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
                   input_bits=input_bits, name=name)


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
    return _split(x, y, seed, test_size, "digits", input_bits=5)


def _read_bytes(path):
    path = Path(path)
    if not path.is_file():
        raise NmflowError(f"IDX file {str(path)!r} does not exist")
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise NmflowError(f"IDX file {str(path)!r} is gzip data that cannot be decompressed "
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
    x = x.reshape(len(x), -1)
    return _split(x, y.astype(np.int64), seed, test_size, f"idx:{Path(images).name}", input_bits=8)
