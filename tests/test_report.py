"""tl.report: each figure of the table against what the individual calls give (predictions scored
in NumPy, the blob, the graph's weights, hand-counted MACs, build_firmware and Firmware.run on
the emulated board), the firmware cache, and the table's three renderings."""

import importlib
import shutil
import threading

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tinylearn as tl  # noqa: E402

report_module = importlib.import_module("tinylearn.report")
BOARD = "netduinoplus2"


def classes_data(n, seed):
    """8x8x2 images whose class (0, 1, 2) is which of three regions is brightest."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, n)
    rows = [slice(0, 3), slice(3, 6), slice(5, 8)]
    for i, c in enumerate(y):
        x[i, rows[c], :, :] += 1.0
    return x, y


def small_cnn():
    return tl.Sequential([
        tl.layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 2)),
        tl.layers.MaxPooling2D(2),
        tl.layers.Flatten(),
        tl.layers.Dense(8, activation="relu"),
        tl.layers.Dense(3, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def data():
    return classes_data(600, seed=3), classes_data(200, seed=4)


@pytest.fixture(scope="module")
def variants(data):
    """A trained float CNN, its int8 conversion, and a smaller CNN's int8 conversion."""
    (x, y), _ = data
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, seed=1, verbose=0)
    small = tl.Sequential([tl.layers.Conv2D(2, 3, strides=2, activation="relu", input_shape=(8, 8, 2)),
                           tl.layers.Flatten(), tl.layers.Dense(3, activation="softmax")])
    small.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    small.fit(x, y, epochs=8, batch_size=32, seed=2, verbose=0)
    return {"float": model, "int8": tl.convert(model, x[:100]), "small int8": tl.convert(small, x[:100])}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """TINYLEARN_HOME in a fresh folder: an empty firmware cache."""
    monkeypatch.setenv("TINYLEARN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def builds(monkeypatch):
    """Counts the calls of tl.deploy.build_firmware (and records their build folders)."""
    calls = []
    real = tl.deploy.build_firmware

    def counting(model, *args, **kwargs):
        calls.append(kwargs.get("out_dir"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(tl.deploy, "build_firmware", counting)
    return calls


def weight_elements(q):
    """Elements of the weights and biases of an int8 graph's FULLY_CONNECTED and convolutions."""
    g = q.graph
    total = 0
    for op in g.ops:
        if op.op in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
            total += sum(g.tensors[t].data.size for t in op.inputs[1:] if t >= 0)
    return total


# -- the figures without a board ---------------------------------------------------------------
def test_rows_equal_the_individual_calls(variants, data):
    _, (xt, yt) = data
    r = tl.report(variants, xt, yt)
    assert r.metric == "accuracy" and r.board is None
    assert [row["variant"] for row in r.rows] == list(variants)
    keys = {"variant", "accuracy", "params", "model_bytes", "arena_bytes", "macs"}
    assert all(set(row) == keys for row in r.rows)
    by = {row["variant"]: row for row in r.rows}

    model = variants["float"]
    acc = np.mean(np.argmax(model.predict(xt), axis=1) == yt)
    assert by["float"]["accuracy"] == acc > 0.6  # it learned something
    n = sum(w.size for w in model.get_weights())
    assert by["float"]["params"] == n == model.count_params()
    assert by["float"]["model_bytes"] == 4 * n
    assert by["float"]["arena_bytes"] is None

    for name in ("int8", "small int8"):
        q = variants[name]
        assert by[name]["accuracy"] == np.mean(np.argmax(q.predict(xt), axis=1) == yt)
        assert by[name]["model_bytes"] == len(q.to_bytes()) == q.size_bytes
        assert by[name]["arena_bytes"] == q.arena_bytes
        assert by[name]["params"] == weight_elements(q)
    # No BatchNormalization to fold: the int8 graph holds the float model's weights.
    assert by["int8"]["params"] == by["float"]["params"]
    assert by["int8"]["macs"] == by["float"]["macs"]
    assert by["small int8"]["params"] < by["int8"]["params"]


def test_one_hot_targets_score_as_class_indices(variants, data):
    _, (xt, yt) = data
    sparse = tl.report(variants, xt, yt).rows
    one_hot = tl.report(variants, xt, np.eye(3, dtype=np.float32)[yt]).rows
    column = tl.report(variants, xt, yt.reshape(-1, 1)).rows
    assert sparse == one_hot == column


def test_regression_reports_mse(trained_sine, sine_int8, sine_split):
    model, _ = trained_sine
    x, y = sine_split["test"]
    r = tl.report({"float": model, "int8": sine_int8}, x, y)
    assert r.metric == "mse"
    assert all("accuracy" not in row and "mse" in row for row in r.rows)
    for row, m in zip(r.rows, (model, sine_int8)):
        pred = m.predict(x).astype(np.float64).reshape(-1)
        assert row["mse"] == pytest.approx(np.mean((pred - y.reshape(-1)) ** 2), rel=1e-12)
    assert 0 < r.rows[0]["mse"] < 0.05
    # 16 + 16 * 16 + 16 multiply-accumulates (1 -> 16 -> 16 -> 1).
    assert [row["macs"] for row in r.rows] == [288, 288]
    assert r.rows[0]["params"] == r.rows[1]["params"] == 16 * 2 + 16 * 17 + 17


def test_explicit_metric(variants, data, trained_sine, sine_split):
    _, (xt, yt) = data
    one_hot = np.eye(3, dtype=np.float32)[yt]
    r = tl.report(variants, xt, one_hot, metric="mse")
    pred = variants["int8"].predict(xt).astype(np.float64)
    assert r.rows[1]["mse"] == pytest.approx(np.mean((pred - one_hot) ** 2), rel=1e-12)
    # One output and metric="accuracy": Keras's binary_accuracy (threshold 0.5).
    model, _ = trained_sine
    x, y = sine_split["test"]
    labels = (y > 0.5).astype(np.float32)
    row = tl.report({"float": model}, x, labels, metric="accuracy").rows[0]
    assert row["accuracy"] == np.mean((model.predict(x).reshape(-1) > 0.5) == (labels.reshape(-1) > 0.5))


def test_macs_hand_counted_equal_between_float_and_int8(rng):
    """Conv2D 3x3 (8x8x2 -> 6x6x4) + BatchNormalization + DepthwiseConv2D 3x3 'same' + pooling +
    Dense: the MACs counted by hand, by model_macs on the float model, and by op_macs on its int8
    conversion (BatchNormalization folded into the convolution)."""
    model = tl.Sequential([
        tl.layers.Conv2D(4, 3, input_shape=(8, 8, 2)),
        tl.layers.BatchNormalization(),
        tl.layers.ReLU(),
        tl.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
        tl.layers.AveragePooling2D(2),
        tl.layers.Flatten(),
        tl.layers.Dense(5, activation="relu"),
        tl.layers.Dense(3),
    ])
    model.build(seed=4)
    x = rng.normal(size=(64, 8, 8, 2)).astype(np.float32)
    q = tl.convert(model, x)
    conv = 6 * 6 * 4 * (3 * 3 * 2)   # each output: a 3x3x2 window
    depthwise = 6 * 6 * 4 * (3 * 3)  # each output: a 3x3 window of its channel
    dense = 3 * 3 * 4 * 5 + 5 * 3    # (3, 3, 4) flattened -> 5 -> 3
    expected = conv + depthwise + dense
    assert report_module.model_macs(model) == expected
    assert report_module.model_macs(q) == expected
    rows = tl.report({"float": model, "int8": q}, x, rng.integers(0, 3, 64)).rows
    assert [row["macs"] for row in rows] == [expected, expected]
    # The float model counts BatchNormalization's 4 x 4 weights; the int8 graph folds them away.
    assert rows[0]["params"] == rows[1]["params"] + 16 == weight_elements(q) + 16


def test_macs_count_every_call_of_a_shared_layer():
    dense = tl.layers.Dense(4, activation="relu")
    inputs = tl.Input(shape=(4,))
    model = tl.Model(inputs, tl.layers.Dense(2)(dense(dense(inputs))))
    model.build(seed=0)
    assert report_module.model_macs(model) == 16 + 16 + 8


def test_a_model_loaded_from_a_blob_has_no_graph_to_count(variants, data):
    _, (xt, yt) = data
    loaded = tl.Int8Model(variants["int8"].to_bytes())
    row = tl.report({"loaded": loaded}, xt, yt).rows[0]
    assert row["params"] is None and row["macs"] is None
    assert row["model_bytes"] == len(variants["int8"].to_bytes())
    assert row["accuracy"] == tl.report({"int8": variants["int8"]}, xt, yt).rows[0]["accuracy"]


# -- renderings --------------------------------------------------------------------------------
def test_text_and_html_tables(variants, data):
    _, (xt, yt) = data
    r = tl.report(variants, xt, yt)
    text = str(r)
    lines = text.splitlines()
    assert lines[0].split() == ["variant", "accuracy", "params", "model", "B", "arena", "B", "MACs"]
    assert len(lines) == 2 + len(variants)
    for line, row in zip(lines[2:], r.rows):
        assert line.startswith(row["variant"])
        assert f"{100 * row['accuracy']:.2f} %" in line and f"{row['model_bytes']:,}" in line
    assert repr(r) == text
    page = r._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 1 + len(variants)
    for name in variants:
        assert f"<td style=\"text-align:left\">{name}</td>" in page
    odd = tl.report({"<b>&": variants["int8"]}, xt, yt)._repr_html_()
    assert "&lt;b&gt;&amp;" in odd and "<b>" not in odd


def test_plot_has_one_point_per_variant(variants, data):
    _, (xt, yt) = data
    r = tl.report(variants, xt, yt)
    fig, ax = plt.subplots()
    try:
        assert r.plot(ax=ax) is ax
        (points,) = ax.collections
        expected = [(row["model_bytes"], row["accuracy"]) for row in r.rows]
        np.testing.assert_allclose(points.get_offsets(), expected)
        assert [t.get_text() for t in ax.texts] == list(variants)
        assert ax.get_xlabel() == "model bytes" and ax.get_ylabel() == "accuracy"
    finally:
        plt.close(fig)
    ax = r.plot()
    try:
        assert len(ax.collections[0].get_offsets()) == len(variants)
    finally:
        plt.close(ax.figure)


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_named(variants, data):
    _, (xt, yt) = data
    q = variants["int8"]
    with pytest.raises(ValueError, match="at least one model variant, got an empty dict"):
        tl.report({}, xt, yt)
    with pytest.raises(TypeError, match="expected a dict of name -> model, got list"):
        tl.report([q], xt, yt)
    with pytest.raises(TypeError, match="variant 'blob': expected a tl.Model or a tl.Int8Model .* got bytes"):
        tl.report({"int8": q, "blob": q.to_bytes()}, xt, yt)
    with pytest.raises(TypeError, match="variant names must be strings"):
        tl.report({1: q}, xt, yt)
    with pytest.raises(ValueError, match="as many samples, got 200 and 199"):
        tl.report({"int8": q}, xt, yt[:-1])
    with pytest.raises(ValueError, match="unknown board 'arduino'; expected one of \\['netduinoplus2'\\]"):
        tl.report({"int8": q}, xt, yt, board="arduino")
    with pytest.raises(ValueError, match=r"variant 'int8' takes inputs of shape \(N, 8, 8, 2\), which "
                                         r"x_test of shape \(200, 8, 8, 1\) does not fit"):
        tl.report({"int8": q}, xt[..., :1], yt)
    with pytest.raises(ValueError, match="metric must be 'accuracy', 'mse' or None, got 'mae'"):
        tl.report({"int8": q}, xt, yt, metric="mae")
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        tl.report({"int8": q}, xt, yt + 1)
    with pytest.raises(ValueError, match=r"y_test of shape \(200, 4\) does not fit the models' output \(3,\)"):
        tl.report({"int8": q}, xt, np.zeros((200, 4)))
    with pytest.raises(ValueError, match="metric='mse' needs targets"):
        tl.report({"int8": q}, xt, yt, metric="mse")
    with pytest.raises(RuntimeError, match="variant 'new': the model has no weights yet"):
        tl.report({"new": small_cnn()}, xt, yt)
    two = tl.Sequential([tl.layers.Flatten(input_shape=(8, 8, 2)), tl.layers.Dense(2)])
    two.build(seed=0)
    with pytest.raises(ValueError, match="the variants' outputs differ"):
        tl.report({"int8": q, "two": two}, xt, yt)
    with pytest.raises(ValueError, match="board_samples must be a positive integer"):
        tl.report({"int8": q}, xt, yt, board=BOARD, board_samples=0)
    with pytest.raises(ValueError, match="stack_bytes must be a positive integer or None, got '1k'"):
        tl.report({"int8": q}, xt, yt, board=BOARD, stack_bytes="1k")
    with pytest.raises(ValueError, match="workers must be a positive integer or None, got 0"):
        tl.report({"int8": q}, xt, yt, board=BOARD, workers=0)
    with pytest.raises(ValueError, match=r"at least one test sample, got x_test of shape \(0, 8, 8, 2\)"):
        tl.report({"int8": q}, xt[:0], yt[:0])
    with pytest.raises(TypeError, match="expected arrays x_test and y_test, got None"):
        tl.report({"int8": q}, xt, None)


def test_a_model_too_large_for_the_board_is_named(home, builds, rng):
    big = tl.Sequential([tl.layers.Dense(1100, input_shape=(1000,)), tl.layers.Dense(2)])
    big.build(seed=0)
    x = rng.normal(size=(16, 1000)).astype(np.float32)
    q = tl.convert(big, x)
    with pytest.raises(ValueError, match="variant 'big' on board 'netduinoplus2': build_firmware: the "
                                         "model does not fit the board"):
        tl.report({"big": q}, x, rng.integers(0, 2, 16), board=BOARD)
    assert len(builds) == 1  # refused by build_firmware before any compiler ran: nothing cached
    assert list((home / "firmware").iterdir()) == []


# -- on the emulated board ---------------------------------------------------------------------
def test_board_figures_equal_build_firmware_and_run(variants, data, home, builds, tmp_path):
    _, (xt, yt) = data
    r = tl.report(variants, xt, yt, board=BOARD, board_samples=5)
    assert r.board == BOARD and r.board_samples == 5
    assert "mean over the first 5 samples" in str(r)
    by = {row["variant"]: row for row in r.rows}
    assert by["float"]["flash_bytes"] is by["float"]["ram_bytes"] is by["float"]["instructions"] is None
    for k, name in enumerate(("int8", "small int8")):
        q = variants[name]
        fw = tl.deploy.build_firmware(q, board=BOARD, out_dir=tmp_path / f"direct{k}")
        run = fw.run(q.quantize_input(xt[:5]))
        assert by[name]["flash_bytes"] == fw.flash_bytes
        assert by[name]["ram_bytes"] == fw.ram_bytes
        assert by[name]["instructions"] == np.mean(run.instructions) > by[name]["macs"]
    assert by["small int8"]["instructions"] < by["int8"]["instructions"]


def test_firmware_is_cached_and_built_once_per_model(variants, data, home, builds, monkeypatch):
    _, (xt, yt) = data
    same = {"a": variants["int8"], "b": variants["small int8"], "again": variants["int8"]}
    # Each build waits for the other before it starts: built one after the other, the first
    # would wait in vain and the barrier would break (BrokenBarrierError).
    barrier = threading.Barrier(2, timeout=120)
    counting = tl.deploy.build_firmware

    def together(model, *args, **kwargs):
        barrier.wait()
        return counting(model, *args, **kwargs)

    monkeypatch.setattr(tl.deploy, "build_firmware", together)
    first = tl.report(same, xt, yt, board=BOARD)
    # Two distinct blobs: two builds, at the same time, each in a folder of its own.
    assert len(builds) == 2 and builds[0] != builds[1]
    assert barrier.n_waiting == 0 and not barrier.broken
    monkeypatch.setattr(tl.deploy, "build_firmware", counting)
    folder = home / "firmware"
    assert report_module.firmware_cache_folder() == folder
    entries = sorted(folder.iterdir())
    assert [p.name for p in entries] == sorted(
        f"{report_module.firmware_key(variants[n], BOARD)}.elf" for n in ("int8", "small int8"))
    mtimes = [p.stat().st_mtime_ns for p in entries]
    by = {row["variant"]: row for row in first.rows}
    assert {k: by["again"][k] for k in ("flash_bytes", "ram_bytes", "instructions")} == \
        {k: by["a"][k] for k in ("flash_bytes", "ram_bytes", "instructions")}

    builds.clear()
    second = tl.report(same, xt, yt, board=BOARD)
    assert builds == []  # every firmware came from the cache
    assert [p.stat().st_mtime_ns for p in sorted(folder.iterdir())] == mtimes
    assert second.rows == first.rows
    # Another stack size is another firmware.
    tl.report({"a": variants["int8"]}, xt, yt, board=BOARD, stack_bytes=2048)
    assert len(builds) == 1 and len(list(folder.iterdir())) == 3


def test_cache_dir_argument(variants, data, tmp_path, builds):
    _, (xt, yt) = data
    q = variants["small int8"]
    tl.report({"q": q}, xt, yt, board=BOARD, cache_dir=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{report_module.firmware_key(q, BOARD)}.elf"]
    assert len(builds) == 1


def test_firmware_key_follows_the_blob_the_stack_and_the_sources(variants, tmp_path, monkeypatch):
    src, core = tl.deploy._firmware_source()
    shutil.copytree(src, tmp_path / "firmware")
    shutil.copytree(core / "micro", tmp_path / "core" / "micro")
    shutil.copytree(core / "include" / "tinylearn" / "micro", tmp_path / "core" / "include" / "tinylearn" / "micro")
    monkeypatch.setattr(tl.deploy, "_firmware_source", lambda: (tmp_path / "firmware", tmp_path / "core"))
    key = report_module.firmware_key
    q, small = variants["int8"], variants["small int8"]
    first = key(q, BOARD)
    assert key(q, BOARD) == first and len(first) == 64
    assert key(small, BOARD) != first
    assert key(q, BOARD, stack_bytes=2048) != first
    header = tmp_path / "core" / "micro" / "requantize.h"
    header.write_text(header.read_text() + "\n// changed\n")
    assert key(q, BOARD) != first


def nested_model():
    base = tl.Sequential([tl.layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), tl.layers.Flatten()])
    inputs = tl.Input(shape=(8, 8, 1))
    return tl.Model(inputs, tl.layers.Dense(3)(base(inputs)))


@pytest.mark.parametrize("make", [tl.applications.ds_cnn, tl.applications.resnet8,
                                  tl.applications.fc_autoencoder, nested_model],
                         ids=["ds_cnn", "resnet8", "fc_autoencoder", "nested"])
def test_macs_of_float_models_equal_their_int8_conversion(make, rng):
    """Depthwise-separable blocks with BatchNormalization, residual additions, a model inside a
    model: the float count from the layers' shapes equals op_macs summed over the int8 graph."""
    model = make()
    model.build(seed=0)
    q = tl.convert(model, rng.normal(size=(8,) + tuple(model.input_shape)).astype(np.float32))
    macs = report_module.model_macs(model)
    assert macs == report_module.model_macs(q) > 0
