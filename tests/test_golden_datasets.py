"""Datasets: scikit-learn digits split and the MNIST-format IDX reader on files written here."""

import gzip
import struct

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from nmflow.errors import NmflowError
from nmflow.golden.datasets import (IDX_IMAGES, IDX_LABELS, load_cifar10, load_digits, load_idx,
                                    read_cifar10_batch, read_idx)


def idx_bytes(array, type_byte=0x08, magic_prefix=b"\x00\x00"):
    """An IDX file's bytes, built from the format's definition."""
    array = np.asarray(array, dtype=np.uint8)
    header = magic_prefix + bytes([type_byte, array.ndim])
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.tobytes()


def write(path, data, compress=False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def one_line(error):
    message = str(error.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------------------- digits

def test_digits_split_sizes_types_and_range():
    data = load_digits()
    assert data.name == "digits"
    assert data.input_bits == 5
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.y_train.shape == (1437,) and data.y_test.shape == (360,)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.x_train.max() == 16 and data.x_train.min() == 0
    assert data.x_test.max() < 2 ** data.input_bits
    assert data.n_features == 64 and data.n_classes == 10


def test_digits_split_is_a_stratified_partition():
    data = load_digits()
    full = sklearn_digits()
    total = np.bincount(full.target, minlength=10)
    train = np.bincount(data.y_train, minlength=10)
    test = np.bincount(data.y_test, minlength=10)
    np.testing.assert_array_equal(train + test, total)
    # stratified: every class keeps its share of the test part, to within one image
    assert np.all(np.abs(test - 0.2 * total) <= 1)
    # the images are the raw integer pixels: every test image is one of sklearn's images
    rows = {row.tobytes() for row in full.data.astype(np.uint8)}
    assert all(row.tobytes() in rows for row in data.x_test)


def test_digits_split_is_fixed_by_the_seed():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)


@pytest.mark.parametrize("test_size", [0, 1.0, -0.1, "0.2"])
def test_digits_refuses_bad_test_size(test_size):
    pattern = r"^test_size must be a fraction strictly between 0 and 1, not .+$"
    with pytest.raises(NmflowError, match=pattern):
        load_digits(test_size=test_size)


def test_digits_refuses_bad_seed():
    with pytest.raises(NmflowError, match=r"^seed must be a non-negative integer, not -1$"):
        load_digits(seed=-1)


# ------------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_images_raw_and_gzip(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write(tmp_path / "images.bin", idx_bytes(images), compress)
    out = read_idx(path, magic=IDX_IMAGES)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)


def test_read_idx_detects_gzip_by_magic_bytes_not_by_name(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    raw_named_gz = write(tmp_path / "labels.gz", idx_bytes(labels))
    gz_named_raw = write(tmp_path / "labels-idx1-ubyte", idx_bytes(labels), compress=True)
    np.testing.assert_array_equal(read_idx(raw_named_gz, magic=IDX_LABELS), labels)
    np.testing.assert_array_equal(read_idx(gz_named_raw, magic=IDX_LABELS), labels)


def test_read_idx_refuses_missing_file(tmp_path):
    with pytest.raises(NmflowError) as error:
        read_idx(tmp_path / "nope")
    assert "nope" in one_line(error) and "does not exist" in one_line(error)


def test_read_idx_refuses_bad_magic(tmp_path):
    path = write(tmp_path / "bad", idx_bytes(np.zeros((2, 2, 2)), magic_prefix=b"PK"))
    pattern = r"^IDX file '.*bad' magic number must start with two zero bytes, not 0x504b0803$"
    with pytest.raises(NmflowError, match=pattern) as error:
        read_idx(path)
    one_line(error)


def test_read_idx_refuses_wrong_type_byte(tmp_path):
    path = write(tmp_path / "signed", idx_bytes(np.zeros((2, 2, 2)), type_byte=0x09))
    with pytest.raises(NmflowError, match=r"^IDX file '.*signed' type byte must be 0x08 \(unsigned "
                                          r"byte\), not 0x09$"):
        read_idx(path)


def test_read_idx_refuses_the_wrong_kind_of_file(tmp_path):
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(4)))
    with pytest.raises(NmflowError, match=r"^IDX file '.*labels' must have magic number 0x00000803 "
                                          r"\(3-D unsigned bytes\), not 0x00000801$"):
        read_idx(labels, magic=IDX_IMAGES)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_refuses_truncated_data(tmp_path, compress):
    data = idx_bytes(np.ones((3, 2, 2)))[:-1]
    path = write(tmp_path / "short", data, compress)
    with pytest.raises(NmflowError, match=r"^IDX file '.*short' must hold 12 data bytes for shape "
                                          r"\[3, 2, 2\], not 11 \(truncated\)$"):
        read_idx(path)


def test_read_idx_refuses_truncated_header_and_trailing_bytes(tmp_path):
    header_cut = write(tmp_path / "cut", idx_bytes(np.ones((3, 2, 2)))[:9])
    with pytest.raises(NmflowError, match=r"^IDX file '.*cut' header must hold 3 dimensions "
                                          r"\(16 bytes\), not 9 bytes \(truncated\)$"):
        read_idx(header_cut)
    long = write(tmp_path / "long", idx_bytes(np.ones(4)) + b"\x00")
    pattern = (r"^IDX file '.*long' must hold 4 data bytes for shape \[4\], "
               r"not 5 \(trailing bytes\)$")
    with pytest.raises(NmflowError, match=pattern):
        read_idx(long)


def test_read_idx_dimensions_whose_product_overflows(tmp_path):
    # 65536 ** 4 = 2 ** 64 wraps to 0 in a 64-bit product: a header with no data must not pass.
    header = b"\x00\x00\x08\x04" + (65536).to_bytes(4, "big") * 4
    path = write(tmp_path / "huge", header)
    with pytest.raises(NmflowError, match=r"^IDX file '.*huge' must hold 18446744073709551616 data "
                                          r"bytes for shape \[65536, 65536, 65536, 65536\], not 0 "
                                          r"\(truncated\)$"):
        read_idx(path)


def test_read_idx_refuses_corrupt_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(200) % 7))
    path = write(tmp_path / "broken.gz", data[: len(data) // 2])
    with pytest.raises(NmflowError, match=r"^IDX file '.*broken.gz' is gzip data that cannot be "
                                          r"decompressed \(truncated or corrupt: .*\)$") as error:
        read_idx(path)
    one_line(error)


def small_idx_pair(tmp_path, n_per_class=5, compress=True):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), n_per_class).astype(np.uint8)
    images = rng.integers(0, 256, size=(len(labels), 3, 4)).astype(np.uint8)
    ipath = write(tmp_path / "images-idx3-ubyte.gz", idx_bytes(images), compress)
    lpath = write(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(labels), compress)
    return images, labels, ipath, lpath


def test_load_idx_flattens_and_splits_stratified(tmp_path):
    images, labels, ipath, lpath = small_idx_pair(tmp_path)
    data = load_idx(ipath, lpath, seed=3, test_size=0.2)
    assert data.input_bits == 8
    assert data.name == "idx:images-idx3-ubyte.gz"
    assert data.x_train.shape == (40, 12) and data.x_test.shape == (10, 12)
    assert data.x_train.dtype == np.uint8 and data.y_test.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), np.ones(10))
    # every (image, label) pair of the split is one of the file's pairs, flattened row by row
    pairs = {(img.reshape(-1).tobytes(), int(lab)) for img, lab in zip(images, labels)}
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert all((row.tobytes(), int(lab)) in pairs for row, lab in zip(x, y))


def test_load_idx_refuses_label_count_mismatch(tmp_path):
    images, labels, ipath, _ = small_idx_pair(tmp_path)
    lpath = write(tmp_path / "few", idx_bytes(labels[:-3]))
    with pytest.raises(NmflowError, match=r"^IDX labels '.*few' must count as many labels as there "
                                          r"are images \(50\), not 47$"):
        load_idx(ipath, lpath)


def test_load_idx_refuses_label_out_of_range(tmp_path):
    images, labels, ipath, _ = small_idx_pair(tmp_path)
    labels = labels.copy()
    labels[7] = 10
    lpath = write(tmp_path / "ten", idx_bytes(labels))
    with pytest.raises(NmflowError, match=r"^IDX labels '.*ten' must be 0 to 9, not 10 "
                                          r"\(label 7\)$"):
        load_idx(ipath, lpath)


def test_load_idx_refuses_images_passed_as_labels(tmp_path):
    _, _, ipath, _ = small_idx_pair(tmp_path)
    with pytest.raises(NmflowError, match=r"must have magic number 0x00000801 .*not 0x00000803$"):
        load_idx(ipath, ipath)


def test_load_idx_refuses_a_split_that_loses_a_class(tmp_path):
    _, _, ipath, lpath = small_idx_pair(tmp_path, n_per_class=1)
    with pytest.raises(NmflowError, match=r"^dataset 'idx:images-idx3-ubyte.gz' cannot be split "
                                          r"with test_size=0.2 keeping every class") as error:
        load_idx(ipath, lpath)
    one_line(error)


# -- CIFAR-10 binary batches, written here -----------------------------------------------------------

def cifar_records(labels, seed=0):
    """Records as CIFAR-10's binary version lays them out: a label byte, then the red, green and
    blue planes of a 32 x 32 image, row by row. Returns (bytes, images [N, 3, 32, 32])."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    data = b"".join(bytes([int(label)]) + image.tobytes() for label, image in zip(labels, images))
    return data, images


def test_read_cifar10_batch_takes_label_then_planes(tmp_path):
    labels = np.array([3, 0, 9, 3, 7], dtype=np.uint8)
    data, images = cifar_records(labels)
    (tmp_path / "data_batch_1.bin").write_bytes(data)
    x, y = read_cifar10_batch(tmp_path / "data_batch_1.bin")
    assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape == (5, 3072)
    assert y.tolist() == [3, 0, 9, 3, 7]
    # the features are the red plane, then green, then blue, each row by row
    assert x[2, 0] == images[2, 0, 0, 0] and x[2, 1024 + 33] == images[2, 1, 1, 1]
    assert x[4, 3071] == images[4, 2, 31, 31]
    np.testing.assert_array_equal(x.reshape(5, 3, 32, 32), images)


def test_cifar10_folder_with_a_test_batch(tmp_path):
    for k, seed in ((1, 1), (2, 2)):
        (tmp_path / f"data_batch_{k}.bin").write_bytes(cifar_records(np.arange(10), seed)[0])
    test, test_images = cifar_records(np.arange(10)[::-1], seed=3)
    (tmp_path / "test_batch.bin").write_bytes(gzip.compress(test))     # gzip by its magic bytes
    data = load_cifar10(tmp_path)
    assert data.shape == (3, 32, 32) and data.input_bits == 8
    assert data.name == f"cifar10:{tmp_path.name}" and data.n_classes == 10
    assert data.x_train.shape == (20, 3072) and data.y_train.tolist() == list(range(10)) * 2
    np.testing.assert_array_equal(data.x_test.reshape(10, 3, 32, 32), test_images)
    assert data.info()["shape"] == [3, 32, 32]


def test_cifar10_folder_without_a_test_batch_is_split(tmp_path):
    (tmp_path / "data_batch_3.bin").write_bytes(cifar_records(np.repeat(np.arange(10), 5))[0])
    data = load_cifar10(tmp_path, seed=1, test_size=0.2)
    assert data.x_train.shape == (40, 3072) and data.x_test.shape == (10, 3072)
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), np.ones(10))


@pytest.mark.parametrize("content, message", [
    (b"", "must hold whole records of 3073 bytes (a label and 3 x 32 x 32 pixels), not 0 bytes"),
    (bytes(3073 * 2 - 1), "must hold whole records of 3073 bytes (a label and 3 x 32 x 32 "
                          "pixels), not 6145 bytes"),
    (bytes([10]) + bytes(3072), "labels must be 0 to 9, not 10 (record 0)"),
    (bytes(3073) + bytes([255]) + bytes(3072), "labels must be 0 to 9, not 255 (record 1)"),
    (b"\x1f\x8b" + bytes(30), "is gzip data that cannot be decompressed"),
])
def test_read_cifar10_batch_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(content)
    with pytest.raises(NmflowError, match=f"^CIFAR-10 batch '{path}' " + re_escape(message)):
        read_cifar10_batch(path)


def re_escape(text):
    import re
    return re.escape(text)


def test_cifar10_folder_refusals(tmp_path):
    with pytest.raises(NmflowError, match=r"^CIFAR-10 folder '.*nowhere' does not exist$"):
        load_cifar10(tmp_path / "nowhere")
    (tmp_path / "test_batch.bin").write_bytes(cifar_records(np.arange(10))[0])
    with pytest.raises(NmflowError, match=r"^CIFAR-10 folder '.*' must hold data_batch_1.bin \.\.\. "
                                          r"data_batch_5.bin \(at least one\), not none of them$"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_1.bin").write_bytes(cifar_records([1, 2])[0])
    (tmp_path / "test_batch.bin").write_bytes(bytes(100))
    with pytest.raises(NmflowError, match=r"test_batch.bin' must hold whole records"):
        load_cifar10(tmp_path)


def test_images_state_their_geometry(tmp_path):
    assert load_digits().shape == (1, 8, 8)
    images, labels, ipath, lpath = small_idx_pair(tmp_path)
    assert load_idx(ipath, lpath).shape == (1, 3, 4)
