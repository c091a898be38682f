"""tl.report: float, post-training-quantized, QAT and distilled variants of a model side by side,
down to the emulated board.

    r = tl.report({"float": model, "ptq": q_ptq, "qat": q_qat}, x_test, y_test,
                  board="netduinoplus2")
    print(r)        # a table; r.rows: a list of dicts; r.plot(): accuracy against model bytes

Per variant (a tl.Model, float or QAT, or a tl.Int8Model):

- ``accuracy`` (classification) or ``mse`` (regression) on (x_test, y_test). Int8 variants are
  run by the host's int8 core, which computes what the firmware computes bit for bit.
- ``params``: a tl.Model's count_params() (as Keras: every weight, BatchNormalization's
  statistics included), without pruning masks and QAT ranges (bookkeeping that stripping and
  conversion drop); an Int8Model's elements of its constant weight and bias tensors
  (BatchNormalization folded into them).
- ``model_bytes``: 4 bytes per parameter (float32) for a tl.Model; the blob's length for an
  Int8Model (what goes into flash).
- ``arena_bytes``: the int8 memory plan's peak (Int8Model.arena_bytes). None for a tl.Model: a
  float model never runs on the board, and tinylearn plans no float arena.
- ``macs``: multiply-accumulates per inference of the Dense, Conv2D and DepthwiseConv2D layers
  (a float model) or of the FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D operators (an int8
  model); the two agree for the same architecture (BatchNormalization folds away, pooling and
  additions count none).
- with ``board=``, for int8 variants: ``flash_bytes`` and ``ram_bytes`` of the firmware image
  (tl.deploy.Firmware) and ``instructions``: the mean of the guest instructions per inference
  that the emulator counts (Firmware.run) over the first ``board_samples`` samples of x_test.
  None for float variants.

The firmware of several variants builds in parallel (one thread each, up to ``workers``; each
build in its own folder) and is cached by its key (sha256 of the blob, the board, the stack size,
tinylearn's version, the firmware and core sources and the compiler's version) in
``$TINYLEARN_HOME/firmware`` (default ``~/.tinylearn/firmware``), written atomically: a second
report of the same models builds nothing.
"""

from __future__ import annotations

import hashlib
import html
import os
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import deploy
from ._io import write_atomic
from ._validate import as_array, as_float_array
from .quantize import Int8Model, op_macs

__all__ = ["Report", "firmware_cache_folder", "firmware_key", "model_macs", "report"]

_METRICS = ("accuracy", "mse")


def firmware_cache_folder(cache_dir=None) -> Path:
    """Where report() keeps built firmware: `cache_dir`, else $TINYLEARN_HOME/firmware, else
    ~/.tinylearn/firmware (as tl.datasets keeps downloads)."""
    if cache_dir is not None:
        return Path(cache_dir)
    home = os.environ.get("TINYLEARN_HOME")
    return (Path(home) if home else Path.home() / ".tinylearn") / "firmware"


# -- figures of one variant ------------------------------------------------------------------
def _layer_macs(kind: str, layer, in_shape: tuple, out_shape: tuple) -> int:
    """Multiply-accumulates of one layer call from its input and output shapes (no batch)."""
    n_out = int(np.prod(out_shape, dtype=np.int64))
    if kind == "Dense":
        return n_out * int(in_shape[-1])
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        return n_out * int(kh) * int(kw) * int(in_shape[-1])
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        return n_out * int(kh) * int(kw)
    return 0


def _macs_kind(layer) -> str | None:
    """'Dense', 'Conv2D' or 'DepthwiseConv2D' for a layer of that kind (or a subclass of its
    class), else None: the other layers do no multiply-accumulates (BatchNormalization folds
    into the convolution before it)."""
    from . import layers

    for kind, cls in (("Dense", layers.Dense), ("Conv2D", layers.Conv2D),
                      ("DepthwiseConv2D", layers.DepthwiseConv2D)):
        if getattr(layer, "kind", None) == kind or isinstance(layer, cls):
            return kind
    return None


def model_macs(model) -> int | None:
    """Multiply-accumulates per inference of a tl.Model (its Dense, Conv2D and DepthwiseConv2D
    layer calls, from their shapes) or of an Int8Model (the sum of quantize.op_macs over its
    graph; None for a model loaded from a blob, which keeps no graph)."""
    from .models import Model

    if isinstance(model, Int8Model):
        g = model.graph
        return None if g is None else int(sum(op_macs(g, op) for op in g.ops))
    if not isinstance(model, Model):
        raise TypeError(f"model_macs: expected a tl.Model or a tl.Int8Model, got {type(model).__name__}")
    if not model._graph_ready():
        raise ValueError("model_macs: the input shape is unknown; give the first layer input_shape "
                         "or build the model")
    core, ids = (model._core, model._ids) if model._core is not None else model._make_core(0)
    total = 0
    for t in model._order:  # every call of every layer, those of nested models included
        if t.layer is None:
            continue
        kind = _macs_kind(t.layer)
        if kind is None:
            continue
        in_shape = tuple(core.node_shape(ids[id(t.inputs[0])]))
        out_shape = tuple(core.node_shape(ids[id(t)]))
        total += _layer_macs(kind, t.layer, in_shape, out_shape)
    return int(total)


def _float_params(model) -> int:
    """count_params() without the bookkeeping of compression: a pruned layer's mask, threshold
    and step (tl.optimize.prune_low_magnitude) and a FakeQuant's range and step (QAT), which the
    model would not keep once stripped or converted."""
    total = 0
    for layer in model._leaves():
        w = layer.get_weights()
        if getattr(layer, "pruning", None) is not None:
            w = w[:len(w) - 3]
        if layer.kind == "FakeQuant":
            w = []
        total += sum(int(a.size) for a in w)
    return total


def _int8_params(q: Int8Model) -> int | None:
    """Elements of the constant weight and bias tensors of an Int8Model's graph (each tensor
    once; RESHAPE's shape and MEAN's axes are not weights)."""
    g = q.graph
    if g is None:
        return None
    seen = set()
    for op in g.ops:
        if op.op in ("RESHAPE", "MEAN"):
            continue
        seen.update(t for t in op.inputs if t >= 0 and g.tensors[t].data is not None)
    return int(sum(int(np.prod(g.tensors[t].shape, dtype=np.int64)) for t in seen))


def _sample_shapes(model) -> tuple[tuple, tuple]:
    """(input, output) shapes of one sample, for a tl.Model or an Int8Model."""
    if isinstance(model, Int8Model):
        return tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    return tuple(model.input_shape), tuple(model.output_shape)


def _predict(model, x: np.ndarray) -> np.ndarray:
    if isinstance(model, Int8Model):
        return model.predict(x)
    return model.predict(x, verbose=0)


# -- the metric ------------------------------------------------------------------------------
def _choose_metric(y: np.ndarray, out_shape: tuple, metric: str | None) -> tuple[str, str]:
    """(metric, how y is read: 'sparse', 'dense' or 'binary')."""
    units = int(out_shape[-1]) if out_shape else 1
    lead = tuple(out_shape[:-1])
    sparse = units > 1 and y.shape[1:] in (lead, lead + (1,))
    dense = y.shape[1:] == tuple(out_shape) or (out_shape == (1,) and y.shape[1:] == ())
    if not (sparse or dense):
        want = f"(N, {', '.join(map(str, out_shape))})"
        if units > 1:
            want += f" or class indices (N{''.join(', ' + str(d) for d in lead)})"
        raise ValueError(f"report: y_test of shape {y.shape} does not fit the models' output "
                         f"{tuple(out_shape)}; expected {want}")
    if sparse:
        if metric == "mse":
            raise ValueError("report: metric='mse' needs targets of the output's shape "
                             f"{tuple(out_shape)}, got class indices of shape {y.shape}")
        if not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y)) or y.min() < 0 \
                or y.max() >= units:
            raise ValueError(f"report: y_test of shape {y.shape} holds class indices for the "
                             f"{units} outputs: expected integers in [0, {units}), got values in "
                             f"[{y.min()}, {y.max()}]")
        return "accuracy", "sparse"
    if metric is None:
        # Several outputs and one-hot rows: classification (Keras's "accuracy" with a
        # categorical loss); anything else, a single output included: regression.
        one_hot = units > 1 and np.isin(y, (0, 1)).all() and np.all(y.sum(axis=-1) == 1)
        metric = "accuracy" if one_hot else "mse"
    if metric == "accuracy":
        return "accuracy", ("dense" if units > 1 else "binary")
    return "mse", "dense"


def _score(pred: np.ndarray, y: np.ndarray, metric: str, how: str) -> float:
    pred = np.asarray(pred, dtype=np.float64)
    if metric == "mse":
        return float(np.mean((pred.reshape(y.shape[0], -1) - y.reshape(y.shape[0], -1).astype(np.float64)) ** 2))
    if how == "sparse":
        labels = y.reshape(pred.shape[:-1]).astype(np.int64)
        return float(np.mean(np.argmax(pred, axis=-1) == labels))
    if how == "binary":  # Keras's binary_accuracy: threshold 0.5
        return float(np.mean((pred.reshape(-1) > 0.5) == (y.reshape(-1) > 0.5)))
    return float(np.mean(np.argmax(pred, axis=-1) == np.argmax(y, axis=-1)))


# -- firmware, built in parallel and cached ----------------------------------------------------
def _source_digest() -> str:
    """sha256 of the firmware project and of the core sources it compiles (TL_CORE_DIR's
    micro/ and include/tinylearn/micro/): every file, build folders, hidden files and Python
    caches aside."""
    src, core = deploy._firmware_source()
    h = hashlib.sha256()
    for k, root in enumerate((src, core / "include" / "tinylearn" / "micro", core / "micro")):
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root)
            if not p.is_file() or any(part.startswith(("build", ".", "__pycache__")) for part in rel.parts):
                continue
            name = f"{k}/{rel.as_posix()}".encode()
            data = p.read_bytes()
            h.update(len(name).to_bytes(8, "little") + name + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _compiler_id() -> str:
    gcc = deploy._which("arm-none-eabi-gcc")
    if gcc is None:
        return "no compiler"
    p = subprocess.run([gcc, "--version"], capture_output=True, text=True)
    return p.stdout.splitlines()[0] if p.stdout else gcc


def firmware_key(q: Int8Model, board: str, stack_bytes: int | None = None, *, _context: str | None = None) -> str:
    """The cache key of the firmware that report() builds for `q` on `board`: sha256 of the blob,
    the board, the stack size, tinylearn's version, the firmware and core sources and the
    compiler's version."""
    from . import __version__

    context = _context if _context is not None else _key_context()
    h = hashlib.sha256()
    for part in (q.to_bytes(), board.encode(), str(stack_bytes).encode(), __version__.encode(),
                 context.encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def _key_context() -> str:
    return _source_digest() + "\0" + _compiler_id()


def _cached_firmware(q: Int8Model, board: str, folder: Path, key: str, stack_bytes) -> deploy.Firmware:
    """The firmware of `q` from the cache, built (in a folder of its own) and stored on a miss."""
    elf = folder / f"{key}.elf"
    if not elf.is_file():
        with tempfile.TemporaryDirectory(prefix="tinylearn-fw-") as d:
            fw = deploy.build_firmware(q, board=board, out_dir=d, stack_bytes=stack_bytes)
            # Atomic: a reader never sees half an ELF; concurrent writers of one key write the
            # same bytes, the last rename wins.
            write_atomic(elf, fw.elf.read_bytes())
    return deploy.Firmware(elf, board, q)


def _board_figures(q: Int8Model, board: str, folder: Path, key: str, stack_bytes, x: np.ndarray) -> dict:
    fw = _cached_firmware(q, board, folder, key, stack_bytes)
    xs = q.quantize_input(x) if q.input_dtype == np.int8 else x.astype(np.float32)
    run = fw.run(xs)
    return {"flash_bytes": int(fw.flash_bytes), "ram_bytes": int(fw.ram_bytes),
            "instructions": float(np.mean(run.instructions))}


# -- the report ------------------------------------------------------------------------------
class Report:
    """The table tl.report() returns: ``rows`` (a list of dicts), ``metric`` ('accuracy' or
    'mse'), ``board`` (None without one) and ``board_samples`` (how many samples of x_test the
    instruction counts average over). Prints as a text table, renders as HTML in Jupyter and
    plots with plot()."""

    def __init__(self, rows: list[dict], metric: str, board: str | None, board_samples: int | None):
        self.rows = rows
        self.metric = metric
        self.board = board
        self.board_samples = board_samples

    @property
    def columns(self) -> list[str]:
        cols = ["variant", self.metric, "params", "model_bytes", "arena_bytes", "macs"]
        if self.board is not None:
            cols += ["flash_bytes", "ram_bytes", "instructions"]
        return cols

    _HEADERS = {"variant": "variant", "accuracy": "accuracy", "mse": "MSE", "params": "params",
                "model_bytes": "model B", "arena_bytes": "arena B", "macs": "MACs",
                "flash_bytes": "flash B", "ram_bytes": "RAM B", "instructions": "instructions"}

    def _cell(self, key: str, value) -> str:
        if value is None:
            return "-"
        if key == "variant":
            return str(value)
        if key == "accuracy":
            return f"{100.0 * value:.2f} %"
        if key == "mse":
            return f"{value:.4g}"
        return f"{round(value):,}"

    def _caption(self) -> str:
        if self.board is None:
            return ""
        mcu = deploy.BOARDS[self.board]["mcu"]
        return (f"board {self.board} ({mcu}, emulated by QEMU): instructions per inference, mean "
                f"over the first {self.board_samples} samples")

    def __str__(self) -> str:
        cols = self.columns
        table = [[self._HEADERS[c] for c in cols]] + [[self._cell(c, r[c]) for c in cols] for r in self.rows]
        widths = [max(len(line[k]) for line in table) for k in range(len(cols))]
        lines = ["  ".join(cell.ljust(w) if k == 0 else cell.rjust(w)
                           for k, (cell, w) in enumerate(zip(line, widths))) for line in table]
        lines.insert(1, "-" * len(lines[0]))
        caption = self._caption()
        return "\n".join(lines + ([caption] if caption else []))

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        cols = self.columns
        head = "".join(f"<th>{html.escape(self._HEADERS[c])}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(
                f"<td style=\"text-align:{'left' if c == 'variant' else 'right'}\">"
                f"{html.escape(self._cell(c, r[c]))}</td>" for c in cols) + "</tr>"
            for r in self.rows)
        caption = self._caption()
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def plot(self, ax=None):
        """Accuracy (or MSE) against model bytes, one labelled point per variant (matplotlib).
        Draws on `ax` if given, else on a new figure; returns the Axes."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots()
        xs = [r["model_bytes"] for r in self.rows]
        ys = [r[self.metric] for r in self.rows]
        ax.scatter(xs, ys)
        for r, x, y in zip(self.rows, xs, ys):
            ax.annotate(str(r["variant"]), (x, y), textcoords="offset points", xytext=(5, 5))
        ax.set_xlabel("model bytes")
        ax.set_ylabel("accuracy" if self.metric == "accuracy" else "MSE")
        ax.set_title("variants: " + ("accuracy" if self.metric == "accuracy" else "MSE") + " against size")
        return ax


def report(variants, x_test, y_test, board: str | None = None, *, metric: str | None = None,
           board_samples: int = 8, stack_bytes: int | None = None, cache_dir=None,
           workers: int | None = None) -> Report:
    """Compares model variants on (x_test, y_test): accuracy or MSE, parameters, model bytes,
    arena bytes, MACs and, with `board` (a key of tl.deploy.BOARDS), each int8 variant's
    firmware flash, RAM and instructions per inference on the emulated board.

    `variants`: a dict name -> tl.Model (float, or QAT from tl.optimize.quantize_model) or
    tl.Int8Model, in the order of the rows. `metric`: 'accuracy' or 'mse'; None chooses, as a
    Keras user expects: class indices (y of shape (N,) or (N, 1) against several outputs) or
    one-hot rows give accuracy (argmax), anything else (a single output, float targets) the mean
    squared error. With metric='accuracy', a single output is thresholded at 0.5 (Keras's
    binary_accuracy). `board_samples`: how many samples of x_test (the first) the instruction
    count averages over. `stack_bytes`: passed to build_firmware. `cache_dir`: where firmware is
    cached (default: firmware_cache_folder()). `workers`: parallel firmware builds (default: one
    per CPU, at most one per model).

    Returns a Report: print it, show it in Jupyter, read ``.rows`` or call ``.plot()``.
    """
    from .models import Model

    if not isinstance(variants, Mapping):
        raise TypeError(f"report: expected a dict of name -> model, got {type(variants).__name__}")
    if not variants:
        raise ValueError("report: expected at least one model variant, got an empty dict")
    for name, m in variants.items():
        if not isinstance(name, str):
            raise TypeError(f"report: variant names must be strings, got {name!r} ({type(name).__name__})")
        if not isinstance(m, (Model, Int8Model)):
            raise TypeError(f"report: variant {name!r}: expected a tl.Model or a tl.Int8Model "
                            f"(from tl.convert), got {type(m).__name__}")
        if isinstance(m, Model) and not m.built:
            raise RuntimeError(f"report: variant {name!r}: the model has no weights yet; train it "
                               "(fit) first")
    if metric is not None and metric not in _METRICS:
        raise ValueError(f"report: metric must be 'accuracy', 'mse' or None, got {metric!r}")
    if board is not None and board not in deploy.BOARDS:
        raise ValueError(f"report: unknown board {board!r}; expected one of {sorted(deploy.BOARDS)}")
    if isinstance(board_samples, bool) or not isinstance(board_samples, (int, np.integer)) or board_samples < 1:
        raise ValueError(f"report: board_samples must be a positive integer, got {board_samples!r}")
    if stack_bytes is not None and (isinstance(stack_bytes, bool) or
                                    not isinstance(stack_bytes, (int, np.integer)) or stack_bytes <= 0):
        raise ValueError(f"report: stack_bytes must be a positive integer or None, got {stack_bytes!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise ValueError(f"report: workers must be a positive integer or None, got {workers!r}")

    if x_test is None or y_test is None:
        raise TypeError("report: expected arrays x_test and y_test, got None")
    x_raw = as_array(x_test, "report: x_test")
    y = as_array(y_test, "report: y_test")
    if x_raw.ndim == 0 or y.ndim == 0:
        raise ValueError(f"report: x_test and y_test must be arrays of samples, got shapes "
                         f"{x_raw.shape} and {y.shape}")
    if len(x_raw) != len(y):
        raise ValueError(f"report: x_test and y_test must hold as many samples, got {len(x_raw)} "
                         f"and {len(y)}")
    if len(x_raw) == 0:
        raise ValueError(f"report: expected at least one test sample, got x_test of shape {x_raw.shape}")
    if not np.issubdtype(y.dtype, np.number) and not np.issubdtype(y.dtype, np.bool_):
        raise TypeError(f"report: y_test: expected a numeric array, got dtype {y.dtype}")

    shapes = {name: _sample_shapes(m) for name, m in variants.items()}
    first = next(iter(variants))
    for name, (in_shape, out_shape) in shapes.items():
        try:
            as_float_array(x_raw[:1], "x_test", in_shape)
        except ValueError:
            raise ValueError(f"report: variant {name!r} takes inputs of shape "
                             f"(N, {', '.join(map(str, in_shape))}), which x_test of shape "
                             f"{x_raw.shape} does not fit") from None
        if out_shape != shapes[first][1]:
            raise ValueError(f"report: the variants' outputs differ: {first!r} gives "
                             f"{shapes[first][1]}, {name!r} gives {out_shape}; one y_test cannot "
                             "score both")
    metric, how = _choose_metric(y, shapes[first][1], metric)
    x = as_float_array(x_raw, "report: x_test", shapes[first][0])

    # Firmware first: it builds (in parallel, outside the GIL) while the host scores.
    futures, pool = {}, None
    if board is not None:
        int8 = {name: m for name, m in variants.items() if isinstance(m, Int8Model)}
        if int8:
            folder = firmware_cache_folder(cache_dir)
            folder.mkdir(parents=True, exist_ok=True)
            context = _key_context()
            keys = {name: firmware_key(q, board, stack_bytes, _context=context) for name, q in int8.items()}
            unique = {}  # one build per distinct blob
            for name, q in int8.items():
                unique.setdefault(keys[name], q)
            n = workers or min(len(unique), os.cpu_count() or 1)
            pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="tinylearn-report")
            xb = x[:board_samples]
            by_key = {k: pool.submit(_board_figures, q, board, folder, k, stack_bytes, xb)
                      for k, q in unique.items()}
            futures = {name: by_key[keys[name]] for name in int8}
    try:
        rows = []
        for name, m in variants.items():
            pred = _predict(m, x)
            if isinstance(m, Int8Model):
                params = _int8_params(m)
                row = {"variant": name, metric: _score(pred, y, metric, how), "params": params,
                       "model_bytes": len(m.to_bytes()), "arena_bytes": m.arena_bytes,
                       "macs": model_macs(m)}
            else:
                params = _float_params(m)
                row = {"variant": name, metric: _score(pred, y, metric, how), "params": params,
                       "model_bytes": 4 * params, "arena_bytes": None, "macs": model_macs(m)}
            rows.append(row)
        if board is not None:
            for row in rows:
                fut = futures.get(row["variant"])
                if fut is None:
                    row.update(flash_bytes=None, ram_bytes=None, instructions=None)
                    continue
                try:
                    row.update(fut.result())
                except Exception as e:
                    msg = f"report: variant {row['variant']!r} on board {board!r}: {e}"
                    cls = type(e) if type(e) in (ValueError, TypeError, RuntimeError) else RuntimeError
                    raise cls(msg) from e
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return Report(rows, metric, board, board_samples if board is not None else None)
