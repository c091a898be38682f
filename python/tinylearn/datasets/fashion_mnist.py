"""Fashion-MNIST (Zalando): 28x28 grey images of 10 kinds of clothing, 60,000 to train on and
10,000 to test, read from the IDX files that Debian's `dataset-fashion-mnist` installs.

    (x_train, y_train), (x_test, y_test) = tl.datasets.fashion_mnist.load_data()
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["CLASS_NAMES", "DEFAULT_PATH", "load_data", "read_idx"]

DEFAULT_PATH = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_HINT = ("install Debian's package dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist, "
         "or 'make setup' in the tinylearn repository), or pass path= to a folder holding the IDX files")


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"Fashion-MNIST file {stem}(.gz) not found in {folder}: {_HINT}")


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) of unsigned bytes into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'IDX'} ({e})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack_from(">HBB", data, 0)
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()}, "
                         "expected 0000080N)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes of data), "
                         f"the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_data(path=None):
    """Returns ((x_train, y_train), (x_test, y_test)) as uint8 arrays, as keras.datasets.

    x: (N, 28, 28) pixel values 0..255; y: (N,) class indices 0..9 (see CLASS_NAMES).
    `path` defaults to $TINYLEARN_FASHION_MNIST or /usr/share/datasets/fashion-mnist.
    """
    folder = Path(path or os.environ.get("TINYLEARN_FASHION_MNIST") or DEFAULT_PATH)
    if not folder.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist: {_HINT}")
    out = []
    for split in ("train", "test"):
        images_file, labels_file = (_find(folder, stem) for stem in _FILES[split])
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{images_file}: expected images of 28x28, got shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{labels_file}: expected {len(images)} labels, got shape {labels.shape}")
        if labels.max(initial=0) > 9:
            raise ValueError(f"{labels_file}: labels must be 0..9, found {int(labels.max())}")
        out.append((images, labels))
    return tuple(out)
