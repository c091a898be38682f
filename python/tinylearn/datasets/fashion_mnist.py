"""Fashion-MNIST (Zalando): 28x28 grey images of 10 kinds of clothing, 60,000 to train on and
10,000 to test, read from the IDX files that Debian's `dataset-fashion-mnist` installs, or else
downloaded once into a cache, as keras.datasets does.

    (x_train, y_train), (x_test, y_test) = tl.datasets.fashion_mnist.load_data()
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import struct
import sys
import urllib.request
from pathlib import Path

import numpy as np

from .._io import atomic_file

__all__ = ["BASE_URL", "CLASS_NAMES", "DEFAULT_PATH", "SHA256", "cache_folder", "load_data", "read_idx"]

DEFAULT_PATH = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"  # keras.datasets.fashion_mnist's
# SHA-256 of the gzip files that Zalando publishes, as TensorFlow Datasets lists them
# (tensorflow_datasets/url_checksums/fashion_mnist.txt). Keras's mirror serves these files
# (the same names and byte sizes); Debian's files are recompressed, so their hashes differ.
SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_HINT = ("install Debian's package dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist), "
         "or pass path= to a folder holding the IDX files")


def cache_folder(cache_dir=None) -> Path:
    """Where downloads go: `cache_dir`, else $TINYLEARN_HOME/datasets, else ~/.tinylearn/datasets
    (as Keras's ~/.keras/datasets and $KERAS_HOME)."""
    if cache_dir is not None:
        return Path(cache_dir)
    home = os.environ.get("TINYLEARN_HOME")
    return (Path(home) if home else Path.home() / ".tinylearn") / "datasets"


def _progress_bar(total, name: str):
    try:  # tqdm.auto draws a widget in Jupyter, but only where ipywidgets is installed
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stdout, leave=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, target: Path, sha256: str) -> None:
    """`url` into `target`, written atomically and only if its SHA-256 is `sha256`."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            h = hashlib.sha256()
            with atomic_file(target) as f, _progress_bar(int(r.headers.get("Content-Length") or 0) or None,
                                                         target.name) as bar:
                while chunk := r.read(1 << 16):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
                if h.hexdigest() != sha256:
                    raise ValueError(f"{url}: the download's SHA-256 is {h.hexdigest()}, expected {sha256} "
                                     "(a damaged transfer or another file); nothing was cached")
    except (OSError, http.client.HTTPException) as e:
        raise OSError(f"cannot download {url} ({e}): check the connection, or {_HINT}") from e


def _cached(cache_dir, base_url) -> Path:
    """The folder of the cached gzip files, downloading those missing or damaged."""
    folder = cache_folder(cache_dir) / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for name, sha256 in SHA256.items():
        target = folder / name
        if not (target.is_file() and _sha256(target) == sha256):
            _download(base_url.rstrip("/") + "/" + name, target, sha256)
    return folder


def _complete(folder: Path) -> bool:
    return all(any((folder / (stem + ext)).is_file() for ext in (".gz", ""))
               for stems in _FILES.values() for stem in stems)


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


def load_data(path=None, *, cache_dir=None, base_url: str | None = None):
    """Returns ((x_train, y_train), (x_test, y_test)) as uint8 arrays, as keras.datasets.

    x: (N, 28, 28) pixel values 0..255; y: (N,) class indices 0..9 (see CLASS_NAMES).
    The files come from `path` if given, else $TINYLEARN_FASHION_MNIST, else Debian's folder
    /usr/share/datasets/fashion-mnist when it holds them; else they are downloaded once from
    `base_url` (default BASE_URL, Keras's) into cache_folder(cache_dir)/fashion-mnist, each
    checked against its SHA-256 (a damaged download raises ValueError and is not kept).
    """
    folder = path or os.environ.get("TINYLEARN_FASHION_MNIST")
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist: {_HINT}")
    elif _complete(DEFAULT_PATH):
        folder = DEFAULT_PATH
    else:
        folder = _cached(cache_dir, BASE_URL if base_url is None else base_url)
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
