"""Data sets: the Fashion-MNIST reader against IDX files written here, and Debian's files."""

import gzip
import hashlib
import http.server
import socket
import struct
import threading

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


# -- downloads (from a server on 127.0.0.1 only) ------------------------------------------------

class _Server:
    """An HTTP server on 127.0.0.1 serving `folder`, recording the paths asked for."""

    def __init__(self, folder):
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A small valid Fashion-MNIST set (gzip IDX files) on a local server, its SHA-256 table in
    place of the real files', Debian's folder hidden, and no network but 127.0.0.1."""
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise OSError(f"the tests reach no host but 127.0.0.1, asked for {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    folder = tmp_path / "www" / "datasets"
    folder.mkdir(parents=True)
    arrays = make_fake(folder, n_train=7, n_test=4, seed=3)
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):  # make_fake writes them plain
        (folder / f"{stem}.gz").write_bytes(gzip.compress((folder / stem).read_bytes()))
        (folder / stem).unlink()
    assert sorted(p.name for p in folder.iterdir()) == sorted(fashion_mnist.SHA256)
    hashes = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in fashion_mnist.SHA256}
    monkeypatch.setattr(fashion_mnist, "SHA256", hashes)
    monkeypatch.setattr(fashion_mnist, "DEFAULT_PATH", tmp_path / "no-debian-files")
    monkeypatch.delenv("TINYLEARN_FASHION_MNIST", raising=False)
    monkeypatch.setenv("TINYLEARN_HOME", str(tmp_path / "home"))
    server = _Server(tmp_path / "www")
    yield server, folder, arrays
    server.close()


def assert_same(loaded, arrays):
    for (x, y), split in zip(loaded, ("train", "test")):
        np.testing.assert_array_equal(x, arrays[split][0])
        np.testing.assert_array_equal(y, arrays[split][1])


def test_downloads_once_into_the_cache(served, tmp_path):
    server, _, arrays = served
    assert_same(fashion_mnist.load_data(base_url=server.url), arrays)
    assert sorted(server.requests) == sorted(f"/datasets/{name}" for name in fashion_mnist.SHA256)
    cache = tmp_path / "home" / "datasets" / "fashion-mnist"  # $TINYLEARN_HOME/datasets
    assert sorted(p.name for p in cache.iterdir()) == sorted(fashion_mnist.SHA256)
    assert_same(fashion_mnist.load_data(base_url=server.url), arrays)
    assert len(server.requests) == 4  # the second call read the cache
    # cache_dir= names another cache; without $TINYLEARN_HOME the default is ~/.tinylearn/datasets.
    assert_same(fashion_mnist.load_data(base_url=server.url, cache_dir=tmp_path / "other"), arrays)
    assert len(server.requests) == 8 and (tmp_path / "other" / "fashion-mnist").is_dir()


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYLEARN_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fashion_mnist.cache_folder() == tmp_path / ".tinylearn" / "datasets"
    assert fashion_mnist.cache_folder(tmp_path / "c") == tmp_path / "c"


def test_a_damaged_download_is_refused_and_not_cached(served, tmp_path):
    server, folder, arrays = served
    images = folder / "t10k-images-idx3-ubyte.gz"
    good = images.read_bytes()
    images.write_bytes(good[:-100] + bytes(100))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: the download's SHA-256 is [0-9a-f]{64}, "
                                         r"expected [0-9a-f]{64}.*nothing was cached"):
        fashion_mnist.load_data(base_url=server.url)
    cache = tmp_path / "home" / "datasets" / "fashion-mnist"
    assert "t10k-images-idx3-ubyte.gz" not in [p.name for p in cache.iterdir()]
    assert not [p.name for p in cache.iterdir() if ".tmp-" in p.name]
    # The files come in the table's order: train images and labels were cached, t10k labels
    # not reached. A damaged file in the cache is downloaded again; the good ones are not.
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    images.write_bytes(good)
    (cache / "train-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    before = len(server.requests)
    assert_same(fashion_mnist.load_data(base_url=server.url), arrays)
    assert sorted(server.requests[before:]) == ["/datasets/t10k-images-idx3-ubyte.gz",
                                                "/datasets/t10k-labels-idx1-ubyte.gz",
                                                "/datasets/train-labels-idx1-ubyte.gz"]


def test_debian_files_are_used_without_downloading(served, monkeypatch, tmp_path):
    server, folder, arrays = served
    monkeypatch.setattr(fashion_mnist, "DEFAULT_PATH", folder)
    assert_same(fashion_mnist.load_data(base_url=server.url), arrays)
    assert server.requests == [] and not (tmp_path / "home").exists()


def test_unreachable_server_says_what_to_do(served, tmp_path):
    server, _, _ = served
    with pytest.raises(OSError, match=r"cannot download http://127.0.0.1:\d+/missing/train-images-idx3-ubyte.gz "
                                      r"\(HTTP Error 404.*dataset-fashion-mnist"):
        fashion_mnist.load_data(base_url=server.url.replace("datasets", "missing"))
    with pytest.raises(OSError, match="no host but 127.0.0.1"):  # the default URL, blocked here
        fashion_mnist.load_data()


def upstream_gzip(debian_file, mtime):
    """Zalando's gzip file from Debian's: the same deflate stream, but Zalando's header names the
    file (FLG.FNAME) and keeps its time, where Debian's has neither. The times (2017-08-31
    10:50:06 and 10:50:27 UTC) were found by trying the seconds around the data set's release
    against the published hashes; the other header bytes are Debian's (XFL 0, OS 3: Unix)."""
    data = debian_file.read_bytes()
    assert data[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags
    name = debian_file.name.removesuffix(".gz").encode() + b"\0"
    return b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + data[8:10] + name + data[10:]


def test_the_published_hashes_are_of_debians_data_and_a_download_of_it_loads(tmp_path, monkeypatch):
    """The SHA-256 table (of Zalando's files, which Keras's mirror serves) holds for Debian's
    data once its gzip header is Zalando's; served on 127.0.0.1 with the real table, the
    download passes its checks and gives Debian's arrays."""
    www = tmp_path / "www" / "datasets"
    www.mkdir(parents=True)
    for name, sha256 in fashion_mnist.SHA256.items():
        upstream = upstream_gzip(fashion_mnist.DEFAULT_PATH / name, 1504176606 if name.startswith("train") else 1504176627)
        assert hashlib.sha256(upstream).hexdigest() == sha256, name
        (www / name).write_bytes(upstream)
    debian = fashion_mnist.load_data()
    monkeypatch.setattr(fashion_mnist, "DEFAULT_PATH", tmp_path / "no-debian-files")
    monkeypatch.delenv("TINYLEARN_FASHION_MNIST", raising=False)
    server = _Server(tmp_path / "www")
    try:
        downloaded = fashion_mnist.load_data(base_url=server.url, cache_dir=tmp_path / "cache")
    finally:
        server.close()
    assert len(server.requests) == 4
    assert_same(downloaded, {"train": debian[0], "test": debian[1]})
