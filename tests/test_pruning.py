"""Magnitude pruning (tl.optimize.prune_low_magnitude) against tfmot's schedule formulas and NumPy
rankings of the kernels' magnitudes; masks through fit, save, load and resumed training."""

import numpy as np
import pytest

import tinylearn as tl
from tinylearn import layers as L

SEED = 5
opt = tl.optimize


def _data(n=256, seed=SEED):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, n)


def _model():
    m = tl.Sequential([L.Conv2D(8, 3, activation="relu", input_shape=(6, 6, 2)),
                       L.DepthwiseConv2D(3, depth_multiplier=2), L.Flatten(),
                       L.Dense(12, activation="relu"), L.Dense(3)])
    m.build(seed=SEED)
    return m


def _compile(m):
    m.compile("adam", tl.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _tfmot_polynomial(step, initial, final, begin, end, power):
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return final + (initial - final) * (1 - p) ** power


def test_schedules_follow_tfmots_formulas():
    s = opt.PolynomialDecay(0.1, 0.9, begin_step=10, end_step=110, power=3, frequency=20)
    for step in [0, 9, 10, 30, 50, 60, 110, 130, 500]:
        prunes = 10 <= step <= 110 and (step - 10) % 20 == 0
        assert s(step) == (prunes, pytest.approx(_tfmot_polynomial(step, 0.1, 0.9, 10, 110, 3)))
    c = opt.ConstantSparsity(0.6, begin_step=5, end_step=-1, frequency=7)
    assert [c(k)[0] for k in (4, 5, 12, 13, 1005)] == [False, True, True, False, (1005 - 5) % 7 == 0]
    assert c(1000)[1] == 0.6


def test_sparsity_follows_the_schedule_step_by_step_in_the_core():
    x, y = _data()
    sched = opt.PolynomialDecay(0.0, 0.75, begin_step=2, end_step=14, power=2, frequency=3)
    p = _compile(opt.prune_low_magnitude(_model(), pruning_schedule=sched))
    dense = p.layers[3]
    seen = []
    p.fit(x, y, epochs=2, batch_size=32, seed=SEED, verbose=0,
          callbacks=[tl.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(
              float(np.mean(dense.get_weights()[0] == 0))))])
    n = dense.get_weights()[0].size
    expected, current = [], 0.0
    for step in range(16):  # 8 batches an epoch
        if 2 <= step <= 14 and (step - 2) % 3 == 0:
            current = np.floor(_tfmot_polynomial(step, 0.0, 0.75, 2, 14, 2) * n) / n
        expected.append(current)
    np.testing.assert_allclose(seen, expected)
    assert dense.get_weights()[-1][0] == 16  # the layer's step counter


def test_the_first_mask_prunes_the_smallest_magnitudes():
    x, y = _data()
    m = _model()
    kernel = m.layers[3].get_weights()[0]
    p = _compile(opt.prune_low_magnitude(m, pruning_schedule=opt.ConstantSparsity(0.4, 0, end_step=0)))
    p.fit(x[:32], y[:32], epochs=1, batch_size=32, seed=SEED, verbose=0)  # one step: one update
    mask = p.layers[3].get_weights()[2]
    order = np.argsort(np.abs(kernel).ravel(), kind="stable")
    ref = np.ones(kernel.size, np.float32)
    ref[order[:int(0.4 * kernel.size)]] = 0
    np.testing.assert_array_equal(mask.ravel(), ref)
    assert np.all(p.layers[3].get_weights()[0][mask == 0] == 0)


def test_block_and_n_of_m_patterns():
    x, y = _data()
    p = _compile(opt.prune_low_magnitude(_model(), pruning_schedule=opt.ConstantSparsity(0.5, 0, frequency=1),
                                         block_size=(4, 2)))
    p.fit(x, y, epochs=1, batch_size=32, seed=SEED, verbose=0)
    k = p.layers[3].get_weights()[0]  # the Dense kernel (inputs, units) = (128, 12)
    blocks = (k != 0).reshape(k.shape[0] // 4, 4, k.shape[1] // 2, 2)
    assert np.all(blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3)))  # each block all or nothing
    nm = _compile(opt.prune_low_magnitude(_model(), pruning_schedule=opt.ConstantSparsity(0.0, 0, frequency=1),
                                          sparsity_m_by_n=(2, 4)))
    nm.fit(x, y, epochs=1, batch_size=32, seed=SEED, verbose=0)
    k = nm.layers[3].get_weights()[0]
    groups = (k != 0).reshape(k.shape[0] // 4, 4, k.shape[1])
    assert groups.sum(axis=1).max() <= 2 and np.mean(k == 0) >= 0.5


def test_global_scope_ranks_all_layers_together():
    x, y = _data()
    m = _model()
    kernels = [la.get_weights()[0] for la in m.layers if la.kind in ("Conv2D", "DepthwiseConv2D", "Dense")]
    p = _compile(opt.prune_low_magnitude(m, pruning_schedule=opt.ConstantSparsity(0.5, 0, end_step=0),
                                         scope="global"))
    p.fit(x[:32], y[:32], epochs=1, batch_size=32, seed=SEED, verbose=0)
    masks = [la.get_weights()[-3] for la in p.layers if getattr(la, "pruning", None)]
    allw = np.concatenate([np.abs(k).ravel() for k in kernels])
    thr = np.sort(allw)[int(0.5 * allw.size) - 1]
    for k, mask in zip(kernels, masks):
        np.testing.assert_array_equal(mask == 0, np.abs(k) <= thr)
    fractions = [float(np.mean(mask == 0)) for mask in masks]
    assert sum(float(np.sum(mask == 0)) for mask in masks) == int(0.5 * allw.size)
    assert max(fractions) - min(fractions) > 0.1  # layers keep different fractions


def test_masks_hold_through_save_load_resume_and_strip(tmp_path):
    x, y = _data()
    sched = opt.PolynomialDecay(0.2, 0.8, begin_step=0, end_step=24, frequency=8)
    a = _compile(opt.prune_low_magnitude(_model(), pruning_schedule=sched))
    a.fit(x, y, epochs=1, batch_size=32, seed=SEED, verbose=0)
    b = tl.load_model(a.save(tmp_path / "a.tlm"))
    np.testing.assert_array_equal(b.predict(x), a.predict(x))
    a.fit(x, y, epochs=4, initial_epoch=1, batch_size=32, seed=SEED, verbose=0)
    b.fit(x, y, epochs=4, initial_epoch=1, batch_size=32, seed=SEED, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    for la in a.layers:
        if getattr(la, "pruning", None):
            k, *_, mask, thr, step = la.get_weights()
            assert step[0] == 32 and np.all(k[mask == 0] == 0)
            assert np.mean(k == 0) >= np.floor(0.8 * k.size) / k.size
    s = opt.strip_pruning(a)
    assert not any(getattr(la, "pruning", None) for la in s.layers)
    np.testing.assert_array_equal(s.predict(x), a.predict(x))
    for ls, la in zip(s.layers, a.layers):
        w = la.get_weights()
        kept = w[:len(w) - (3 if getattr(la, "pruning", None) else 0)]
        assert len(ls.get_weights()) == len(kept)
        for ws, wk in zip(ls.get_weights(), kept):
            np.testing.assert_array_equal(ws, wk)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="target_sparsity"):
        opt.ConstantSparsity(1.0, 0)
    with pytest.raises(ValueError, match="end_step"):
        opt.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=10)
    with pytest.raises(ValueError, match="sparsity_m_by_n"):
        opt.prune_low_magnitude(_model(), sparsity_m_by_n=(4, 2))
    with pytest.raises(ValueError, match="scope"):
        opt.prune_low_magnitude(_model(), scope="everything")
    with pytest.raises(ValueError, match="no kernel"):
        opt.prune_low_magnitude(L.Flatten())
    with pytest.raises(TypeError, match="pruning_schedule"):
        opt.prune_low_magnitude(_model(), pruning_schedule=0.5)
    p = opt.prune_low_magnitude(_model())
    with pytest.raises(ValueError, match="already pruned"):
        opt.prune_low_magnitude(p)


# ---- structured pruning: tl.optimize.prune_filters ------------------------------------------

def _scaled(w, axis_index, idx, factor=1e-3):
    w = w.copy()
    sl = [slice(None)] * w.ndim
    sl[axis_index] = idx
    w[tuple(sl)] *= factor
    return w


def test_prune_filters_removes_the_weakest_filters_and_equals_the_model_without_them():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(16, 8, 8, 2)).astype(np.float32)
    m = tl.Sequential([L.Conv2D(8, 3, input_shape=(8, 8, 2)), L.BatchNormalization(), L.ReLU(),
                       L.Conv2D(6, 3, activation="relu"), L.GlobalAveragePooling2D(),
                       L.Dense(4, activation="relu"), L.Dense(3)])
    m.build(seed=SEED)
    c1, bn, _, c2, _, d1, d2 = m.layers
    bn.set_weights([rng.uniform(0.5, 1.5, 8).astype(np.float32), rng.normal(size=8).astype(np.float32),
                    rng.normal(size=8).astype(np.float32), rng.uniform(0.5, 2, 8).astype(np.float32)])
    k, b = c1.get_weights()
    c1.set_weights([_scaled(k, 3, [0, 2, 4, 6]), b])
    k, b = c2.get_weights()
    c2.set_weights([_scaled(k, 3, [1, 3, 5]), b])
    k, b = d1.get_weights()
    d1.set_weights([_scaled(k, 1, [0, 1]), b])
    small = opt.prune_filters(m, fraction=0.5)
    assert [la.get_weights()[0].shape for la in small.layers if la.kind in ("Conv2D", "Dense")] == \
        [(3, 3, 2, 4), (3, 3, 4, 3), (3, 2), (2, 3)]
    assert small.layers[1].get_weights()[0].shape == (4,)  # BN follows its convolution
    # The original with the removed channels' contributions to the next layers zeroed.
    k, b = c2.get_weights()
    k[:, :, [0, 2, 4, 6], :] = 0
    c2.set_weights([k, b])
    k, b = d1.get_weights()
    k[[1, 3, 5], :] = 0
    d1.set_weights([k, b])
    k, b = d2.get_weights()
    k[[0, 1], :] = 0
    d2.set_weights([k, b])
    np.testing.assert_allclose(small.predict(x), m.predict(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("app", ["resnet8", "ds_cnn"])
def test_prune_filters_on_residual_and_depthwise_models(app):
    from tinylearn.optimize._filters import _Plan
    from tinylearn.report import model_macs

    rng = np.random.default_rng(SEED)
    m = getattr(tl.applications, app)()
    m.build(seed=SEED)
    x = rng.normal(size=(4, *m.input_shape)).astype(np.float32)
    small = opt.prune_filters(m, fraction=0.5, criterion="l2")
    assert model_macs(small) < 0.6 * model_macs(m)
    assert small.predict(x).shape == m.predict(x).shape
    # Zero, in the original, every next-layer weight that reads a removed channel: the pruned
    # model then computes the same.
    plan = _Plan(m, "l2")
    keep = plan.keep(0.5)
    plan.keep_now = keep
    for t in m._order:
        if isinstance(t.layer, (L.Conv2D, L.Dense)):
            w = t.layer.get_weights()
            p = t.inputs[0]
            if id(p) in plan.flat:
                space, positions = plan.flat[id(p)]
                root = plan.groups.find(space)
                ch = plan.channels[root]
                if root in keep:
                    drop = np.setdiff1d(np.arange(ch), keep[root])
                    rows = (np.arange(positions)[:, None] * ch + drop[None, :]).ravel()
                    w[0][rows, :] = 0
            else:
                root = plan.groups.find(plan.space[id(p)])
                if root in keep:
                    drop = np.setdiff1d(np.arange(w[0].shape[-2]), keep[root])
                    if t.layer.kind == "Dense":
                        w[0][drop, :] = 0
                    else:
                        w[0][:, :, drop, :] = 0
            t.layer.set_weights(w)
    np.testing.assert_allclose(small.predict(x), m.predict(x), rtol=1e-4, atol=1e-5)
    if app == "resnet8":  # the residual Adds' inputs lost the same channels
        adds = [t for t in small._order if t.layer is not None and t.layer.kind == "Add"]
        assert adds and all(len({small._core.node_shape(small._ids[id(p)])[-1] for p in t.inputs}) == 1
                            for t in adds)


def test_prune_filters_to_a_mac_budget_and_errors():
    from tinylearn.report import model_macs

    m = tl.applications.ds_cnn()
    m.build(seed=SEED)
    small = opt.prune_filters(m, target_macs=model_macs(m) // 2)
    assert model_macs(small) <= model_macs(m) // 2
    assert model_macs(opt.prune_filters(m, fraction=0.0)) == model_macs(m)
    with pytest.raises(ValueError, match="exactly one"):
        opt.prune_filters(m)
    with pytest.raises(ValueError, match="criterion"):
        opt.prune_filters(m, fraction=0.5, criterion="random")
    with pytest.raises(ValueError, match="fraction"):
        opt.prune_filters(m, fraction=1.0)
    with pytest.raises(ValueError, match="no uniform fraction"):
        opt.prune_filters(m, target_macs=10)


def test_report_rows_for_pruned_variants():
    x, y = _data()
    p = _compile(opt.prune_low_magnitude(_model(), pruning_schedule=opt.ConstantSparsity(0.8, 0, frequency=4)))
    p.fit(x, y, epochs=2, batch_size=32, seed=SEED, verbose=0)
    stripped = opt.strip_pruning(p)
    dense_q = tl.convert(stripped, x[:64], weight_encoding="dense")
    sparse_q = tl.convert(stripped, x[:64])
    rows = {r["variant"]: r for r in tl.report({"pruned": p, "stripped": stripped, "int8 dense": dense_q,
                                                "int8 sparse": sparse_q}, x, y).rows}
    assert rows["pruned"]["params"] == rows["stripped"]["params"] == stripped.count_params()
    assert rows["int8 sparse"]["model_bytes"] == len(sparse_q.to_bytes()) < rows["int8 dense"]["model_bytes"]
    assert rows["int8 sparse"]["accuracy"] == rows["int8 dense"]["accuracy"]
    assert rows["pruned"]["accuracy"] == rows["stripped"]["accuracy"]
