"""Data sets: the Fashion-MNIST reader against IDX files written here, and Debian's files."""

import gzip
import struct

import numpy as np
import pytest

import tinylearn as tl
from tinylearn.datasets import fashion_mnist


def write_idx(path, array, compress=True):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_fake(folder, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n, (img, lab) in (("train", n_train, fashion_mnist._FILES["train"]),
                                 ("test", n_test, fashion_mnist._FILES["test"])):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{img}.gz", x)
        write_idx(folder / lab, y, compress=False)  # plain files are read too
        arrays[split] = (x, y)
    return arrays


def test_reads_idx_files_it_did_not_write_itself(tmp_path):
    arrays = make_fake(tmp_path)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(tmp_path)
    np.testing.assert_array_equal(x_train, arrays["train"][0])
    np.testing.assert_array_equal(y_train, arrays["train"][1])
    np.testing.assert_array_equal(x_test, arrays["test"][0])
    assert x_train.dtype == y_train.dtype == np.uint8


def test_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist.load_data(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        fashion_mnist.load_data(tmp_path)


def test_malformed_files_say_what_is_wrong(tmp_path):
    make_fake(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match=r"header says \(5, 28, 28\).*holds 3910"):
        fashion_mnist.load_data(tmp_path)
    images.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]))
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        fashion_mnist.load_data(tmp_path)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot be read as gzip"):
        fashion_mnist.load_data(tmp_path)


def test_labels_out_of_range(tmp_path):
    make_fake(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 2, 12]), compress=False)
    with pytest.raises(ValueError, match="labels must be 0..9, found 12"):
        fashion_mnist.load_data(tmp_path)


def test_debian_files():
    """The real data set, which make test installs (dataset-fashion-mnist)."""
    (x_train, y_train), (x_test, y_test) = tl.datasets.fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_sine_is_seeded():
    x1, y1 = tl.datasets.sine(50, noise=0.1, seed=3)
    x2, y2 = tl.datasets.sine(50, noise=0.1, seed=3)
    x3, _ = tl.datasets.sine(50, noise=0.1, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert x1.shape == y1.shape == (50, 1) and (0 <= x1).all() and (x1 < 2 * np.pi).all()
    np.testing.assert_allclose(tl.datasets.sine(50, noise=0.0, seed=3)[1], np.sin(x1), atol=1e-6)
