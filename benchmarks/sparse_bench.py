"""Sparse int8 weights: blob bytes and instructions per inference on the emulated STM32F405
(QEMU netduinoplus2, -icount) of a magnitude-pruned CNN stored sparse (tl.convert's default,
weight_encoding="auto") against the same model stored dense, side by side, at several
sparsities.

    python benchmarks/sparse_bench.py [--sparsities 0.5,0.7,0.8,0.9] [--samples 4] [--seed 0]
                                      [--out FILE]

The model is the training benchmark's CNN (conv16-pool-conv32-pool-64-10, 28x28x1 inputs),
pruned per layer with tl.optimize.ConstantSparsity for one epoch on random inputs and labels
(bytes and instructions depend on where the zeros are, not on accuracy: the pruning benchmark
on Fashion-MNIST reports that), then stripped. Both blobs must give the same int8 outputs, on the
host and on the board; the instructions are the mean over --samples random inputs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import tinylearn as tl
from tinylearn import layers as L


def pruned_cnn(sparsity: float, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (256, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    m = tl.Sequential([L.Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                       L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                       L.Dense(64, activation="relu"), L.Dense(10)])
    m.build(seed=seed)
    opt = tl.optimize
    p = opt.prune_low_magnitude(m, pruning_schedule=opt.ConstantSparsity(sparsity, begin_step=0, frequency=1))
    p.compile("adam", tl.losses.SparseCategoricalCrossentropy(from_logits=True))
    p.fit(x, y, epochs=1, batch_size=32, seed=seed, verbose=0)
    return opt.strip_pruning(p), x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsities", default="0.5,0.7,0.8,0.9")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = []
    for s in (float(v) for v in a.sparsities.split(",")):
        model, x = pruned_cnn(s, a.seed)
        sparse = tl.convert(model, x[:128])
        dense = tl.convert(model, x[:128], weight_encoding="dense")
        xq = np.random.default_rng(a.seed + 1).integers(-128, 128, (a.samples, 28, 28, 1), dtype=np.int8)
        y = dense.invoke(xq)
        if not np.array_equal(sparse.invoke(xq), y):
            raise SystemExit(f"sparsity {s}: the sparse blob's outputs differ from the dense one's")
        with tempfile.TemporaryDirectory() as d:
            fs = tl.deploy.build_firmware(sparse, out_dir=Path(d) / "sparse")
            fd = tl.deploy.build_firmware(dense, out_dir=Path(d) / "dense")
            ys, ics = fs.run(xq)
            yd, icd = fd.run(xq)
        if not (np.array_equal(ys, y) and np.array_equal(yd, y)):
            raise SystemExit(f"sparsity {s}: the firmware's outputs differ from the host's")
        ws = sum(e["bytes"] for e in sparse.weight_encodings())
        wd = sum(e["bytes"] for e in dense.weight_encodings())
        rows.append({"sparsity": s, "encodings": [e["encoding"] for e in sparse.weight_encodings()],
                     "weight_bytes": [ws, wd], "blob_bytes": [sparse.size_bytes, dense.size_bytes],
                     "flash_bytes": [fs.flash_bytes, fd.flash_bytes],
                     "instructions": [float(ics.mean()), float(icd.mean())]})
    print(f"{'sparsity':>8}  {'weights sparse/dense (B)':>26}  {'blob (B)':>17}  {'flash (B)':>17}  "
          f"{'instructions':>21}  encodings")
    for r in rows:
        (ws, wd), (bs, bd), (fs_, fd_), (i_s, i_d) = (r["weight_bytes"], r["blob_bytes"], r["flash_bytes"],
                                                     r["instructions"])
        print(f"{r['sparsity']:>8.2f}  {ws:>8}/{wd:<8} {ws / wd:5.3f}x  {bs:>6}/{bd:<6} {bs / bd:5.3f}x  "
              f"{fs_:>6}/{fd_:<6} {fs_ / fd_:5.3f}x  {i_s:>8.0f}/{i_d:<8.0f} {i_s / i_d:5.3f}x  "
              f"{','.join(r['encodings'])}")
    if a.out:
        from tinylearn._io import write_atomic

        a.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(a.out, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
