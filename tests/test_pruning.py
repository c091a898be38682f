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
