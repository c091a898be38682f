"""Quantization side by side: float, post-training int8 (PTQ) and quantization-aware training
(QAT), tinylearn next to Keras with tfmot (tensorflow-model-optimization), in one run.

    python benchmarks/qat_bench.py [--workloads fmnist_cnn,ds_cnn_bn] [--frameworks tinylearn,tfmot]
                                   [--epochs 5] [--qat-epochs 2] [--quick] [--out FILE]

Fashion-MNIST (tl.datasets.fashion_mnist.load_data(); inputs scaled to [0, 1], shape (28, 28, 1)),
the 60 000 training images and the 10 000 test images. Two models, the same architecture in both
frameworks (the parameter counts are printed and must agree):
- fmnist_cnn: the training benchmark's CNN (conv16-pool-conv32-pool-64-10, logits);
- ds_cnn_bn: a MobileNet-style depthwise-separable CNN, Conv2D 3x3/2 -> BN -> ReLU6, then 4 blocks
  DepthwiseConv2D 3x3 -> BN -> ReLU6 -> Conv2D 1x1 -> BN -> ReLU6 (32, 64/2, 96, 128/2 channels),
  GlobalAveragePooling2D, Dense softmax; convolutions without bias (BN's beta is the bias).
Per model and framework, each in its own process:
1. float training, `--epochs` epochs, batch 64, Adam (Keras's defaults, learning rate 1e-3),
   shuffled with seed 1; float test accuracy; time per epoch;
2. PTQ: full-int8 conversion calibrated on the first 1000 training images: tinylearn's
   tl.convert(model, representative_data=x_train[:1000]); Keras's TFLiteConverter with that
   representative dataset, int8 builtins only, int8 input and output, run by LiteRT
   (ai_edge_litert); int8 test accuracy;
3. QAT: fine-tuning of the trained float model for `--qat-epochs` epochs, batch 64, Adam with
   learning rate `--qat-lr` (1e-4); time per epoch, then int8 test accuracy after conversion with
   no representative data (the learned ranges): tinylearn's tl.optimize.quantize_model -> compile
   -> fit -> tl.convert(qat_model); tfmot.quantization.keras.quantize_model (its default 8-bit
   scheme: Conv/Depthwise + BN [+ ReLU6] become one unit with no fake quantization between them,
   BN folded at conversion) -> compile -> fit -> TFLiteConverter (int8 input and output) -> LiteRT.
   Where tinylearn has no tl.optimize.quantize_model, its QAT rows say so and stay empty.

Time per epoch: the median wall-clock time of the epochs after the first (fit's own epochs,
measured from epoch end to epoch end by a callback; Keras's first epoch includes tracing its
graph, so both frameworks leave the first out; with one epoch, that one). Threads: both frameworks use the machine's cores
(os.cpu_count()): tinylearn by default (OMP_NUM_THREADS unset), TensorFlow with intra-op and
inter-op thread pools of that size set explicitly (TensorFlow's own default); LiteRT with 2
threads (accuracy only, not timed). Keras side: Keras 2 (tf_keras) with TF_USE_LEGACY_KERAS=1, as
tfmot requires; seeds: tf_keras.utils.set_random_seed(1) (Python, NumPy and TensorFlow).

The default run (5 float epochs as the training benchmark, 2 QAT epochs) takes about 10 minutes
on 2 cores. `--quick`: 20 000 training images, 2000 test images, 2 float epochs and 1 QAT epoch
(a check that everything runs, not figures to quote).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKLOADS = {
    "fmnist_cnn": "the training benchmark's CNN conv16-pool-conv32-pool-64-10 (logits)",
    "ds_cnn_bn": "MobileNet-style depthwise-separable CNN: Conv2D 3x3/2 16 -> BN -> ReLU6, 4 blocks "
                 "DW 3x3 -> BN -> ReLU6 -> 1x1 -> BN -> ReLU6 (32, 64/2, 96, 128/2), GAP, Dense softmax",
}
FRAMEWORKS = ("tinylearn", "tfmot")
SEED = 1
BATCH = 64
EPOCHS, QAT_EPOCHS, QAT_LR = 5, 2, 1e-4  # the full run: about 10 minutes on 2 cores
CALIBRATION = 1000  # PTQ's representative data: the first training images
# ds_cnn_bn's blocks: (pointwise filters, depthwise stride)
BLOCKS = ((32, 1), (64, 2), (96, 1), (128, 2))
# --quick: enough steps (626) for BN's moving statistics (momentum 0.99) to forget their start
QUICK = {"train": 20000, "test": 2000, "epochs": 2, "qat_epochs": 1}
GOALS = {"ptq_vs_float": -1.0, "qat_vs_float": -0.3, "qat_speed_vs_tfmot": 1.5,
         "qat_vs_tfmot": -0.2, "qat_epoch_vs_float_epoch": 1.5}


def load(train: int | None, test: int | None):
    import tinylearn as tl

    (xtr, ytr), (xte, yte) = tl.datasets.fashion_mnist.load_data()
    xtr = (xtr[:train].astype(np.float32) / 255)[..., None]
    xte = (xte[:test].astype(np.float32) / 255)[..., None]
    return xtr, ytr[:train].astype(np.int64), xte, yte[:test].astype(np.int64)


def accuracy(pred, y) -> float:
    return float(np.mean(np.asarray(pred).reshape(len(y), -1).argmax(axis=1) == y))


def median_epoch(stamps: list[float]) -> tuple[float, list[float]]:
    """stamps: the start of fit, then the end of each epoch -> (seconds per epoch, each epoch's).
    Seconds per epoch: the median of the epochs after the first (Keras traces its graph in the
    first), or the first when it is the only one."""
    per = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(per[1:] or per), per


# ---------------------------------------------------------------------------------- tinylearn

def tinylearn_model(workload: str):
    import tinylearn as tl

    L = tl.layers
    if workload == "fmnist_cnn":
        return tl.Sequential([L.Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                              L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                              L.Dense(64, activation="relu"), L.Dense(10)])
    layers = [L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, input_shape=(28, 28, 1)),
              L.BatchNormalization(), L.ReLU(max_value=6)]
    for filters, stride in BLOCKS:
        layers += [L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False),
                   L.BatchNormalization(), L.ReLU(max_value=6),
                   L.Conv2D(filters, 1, use_bias=False), L.BatchNormalization(), L.ReLU(max_value=6)]
    return tl.Sequential(layers + [L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")])


def tinylearn_loss(workload: str):
    import tinylearn as tl

    return tl.losses.SparseCategoricalCrossentropy(from_logits=workload == "fmnist_cnn")


def run_tinylearn(workload, x, y, xt, yt, epochs, qat_epochs, qat_lr) -> dict:
    import tinylearn as tl

    out = {}
    m = tinylearn_model(workload)
    m.compile(optimizer=tl.optimizers.Adam(1e-3), loss=tinylearn_loss(workload), metrics=["accuracy"])
    stamps = [time.perf_counter()]
    m.fit(x, y, batch_size=BATCH, epochs=epochs, seed=SEED, verbose=0,
          callbacks=[lambda epoch, logs: stamps.append(time.perf_counter())])
    out["params"] = int(m.count_params())
    out["float_epoch_s"], out["float_epochs_s"] = median_epoch(stamps)
    out["float_acc"] = accuracy(m.predict(xt), yt)

    q = tl.convert(m, representative_data=x[:CALIBRATION])
    out["ptq_acc"] = accuracy(q.predict(xt), yt)

    quantize_model = getattr(getattr(tl, "optimize", None), "quantize_model", None)
    if quantize_model is None:
        out["qat_missing"] = "tl.optimize.quantize_model is not in this tinylearn"
        return out
    qat = quantize_model(m)
    qat.compile(optimizer=tl.optimizers.Adam(qat_lr), loss=tinylearn_loss(workload), metrics=["accuracy"])
    stamps = [time.perf_counter()]
    qat.fit(x, y, batch_size=BATCH, epochs=qat_epochs, seed=SEED, verbose=0,
            callbacks=[lambda epoch, logs: stamps.append(time.perf_counter())])
    out["qat_epoch_s"], out["qat_epochs_s"] = median_epoch(stamps)
    out["qat_sim_acc"] = accuracy(qat.predict(xt), yt)  # the QAT model's own (simulated int8) output
    out["qat_acc"] = accuracy(tl.convert(qat).predict(xt), yt)
    return out


# ---------------------------------------------------------------------------------- Keras / tfmot

def keras_setup():
    """Keras 2 (tf_keras) for tfmot, TensorFlow's thread pools sized as the machine, seeds."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    threads = os.cpu_count() or 1
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import tf_keras

    tf_keras.utils.set_random_seed(SEED)
    return tf, tf_keras


def keras_model(workload: str, keras):
    L = keras.layers
    if workload == "fmnist_cnn":
        return keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
                                 L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                                 L.Dense(64, activation="relu"), L.Dense(10)])
    layers = [keras.Input((28, 28, 1)), L.Conv2D(16, 3, strides=2, padding="same", use_bias=False),
              L.BatchNormalization(), L.ReLU(6.0)]
    for filters, stride in BLOCKS:
        layers += [L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False),
                   L.BatchNormalization(), L.ReLU(6.0),
                   L.Conv2D(filters, 1, use_bias=False), L.BatchNormalization(), L.ReLU(6.0)]
    return keras.Sequential(layers + [L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")])


def litert_accuracy(tflite: bytes, xt, yt) -> float:
    """Runs a full-int8 .tflite on the test set with LiteRT; argmax of the int8 output."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite, num_threads=2)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [len(xt), *xt.shape[1:]])
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    floats = [t["name"] for t in it.get_tensor_details() if t["dtype"] == np.float32]
    if inp["dtype"] != np.int8 or outp["dtype"] != np.int8 or floats:
        raise RuntimeError(f"expected a full-int8 model, got input {inp['dtype']}, output {outp['dtype']} "
                           f"and float tensors {floats}")
    it.set_tensor(inp["index"], np.clip(np.round(xt / scale) + zero, -128, 127).astype(np.int8))
    it.invoke()
    return accuracy(it.get_tensor(outp["index"]), yt)


def int8_tflite(tf, model, representative=None) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        conv.representative_dataset = lambda: ([representative[i:i + 1]] for i in range(len(representative)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # A QAT model: its fake quantization gives every range (TF 2.21's converter refuses
    # supported_ops={TFLITE_BUILTINS_INT8} without a representative dataset, in its metrics step
    # before it looks at the graph; litert_accuracy checks that no float tensor is left instead).
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def run_tfmot(workload, x, y, xt, yt, epochs, qat_epochs, qat_lr) -> dict:
    tf, keras = keras_setup()
    import tensorflow_model_optimization as tfmot

    out = {}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=workload == "fmnist_cnn")
    m = keras_model(workload, keras)
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    stamps = []
    timer = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: stamps.append(time.perf_counter()),
                                           on_epoch_end=lambda epoch, logs: stamps.append(time.perf_counter()))
    m.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    out["params"] = int(m.count_params())
    out["float_epoch_s"], out["float_epochs_s"] = median_epoch(stamps)
    out["float_acc"] = accuracy(m.predict(xt, batch_size=1024, verbose=0), yt)

    out["ptq_acc"] = litert_accuracy(int8_tflite(tf, m, x[:CALIBRATION]), xt, yt)

    qat = tfmot.quantization.keras.quantize_model(m)
    qat.compile(optimizer=keras.optimizers.Adam(qat_lr), loss=loss, metrics=["accuracy"])
    stamps = []
    qat.fit(x, y, batch_size=BATCH, epochs=qat_epochs, shuffle=True, verbose=0, callbacks=[timer])
    out["qat_epoch_s"], out["qat_epochs_s"] = median_epoch(stamps)
    out["qat_sim_acc"] = accuracy(qat.predict(xt, batch_size=1024, verbose=0), yt)
    out["qat_acc"] = litert_accuracy(int8_tflite(tf, qat), xt, yt)
    return out


# ---------------------------------------------------------------------------------- driver

def child(workload: str, framework: str, quick: bool, epochs: int, qat_epochs: int, qat_lr: float) -> dict:
    if quick:
        x, y, xt, yt = load(QUICK["train"], QUICK["test"])
    else:
        x, y, xt, yt = load(None, None)
    run = {"tinylearn": run_tinylearn, "tfmot": run_tfmot}[framework]
    out = run(workload, x, y, xt, yt, epochs, qat_epochs, qat_lr)
    return {"workload": workload, "framework": framework, "train": len(x), "test": len(xt), **out}


def versions() -> dict:
    out = {}
    for name, mod in (("tinylearn", "tinylearn"), ("tensorflow", "tensorflow"), ("tf_keras", "tf_keras"),
                      ("tfmot", "tensorflow_model_optimization"), ("ai_edge_litert", "ai_edge_litert")):
        code = (f"import {mod}; print(getattr({mod}, '__version__', None) or "
                f"__import__('importlib.metadata').metadata.version('{mod.replace('_', '-')}'))")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"})
        out[name] = p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else None
    return out


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def secs(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def goal_rows(w: str, tl_r: dict | None, tf_r: dict | None) -> list[tuple]:
    """(measure, value, goal, met) for one workload; None where a figure is missing."""
    rows = []
    t = tl_r or {}
    k = tf_r or {}

    def pts(a, b):
        return None if a is None or b is None else 100 * (a - b)

    d = pts(t.get("ptq_acc"), t.get("float_acc"))
    rows.append(("tinylearn PTQ int8 - float (points)", d, f">= {GOALS['ptq_vs_float']}",
                 None if d is None else d >= GOALS["ptq_vs_float"]))
    d = pts(t.get("qat_acc"), t.get("float_acc"))
    rows.append(("tinylearn QAT int8 - float (points)", d, f">= {GOALS['qat_vs_float']}",
                 None if d is None else d >= GOALS["qat_vs_float"]))
    d = pts(t.get("qat_acc"), t.get("ptq_acc"))
    rows.append(("tinylearn QAT int8 - PTQ int8 (points)", d, ">= 0", None if d is None else d >= 0))
    r = (k["qat_epoch_s"] / t["qat_epoch_s"]) if t.get("qat_epoch_s") and k.get("qat_epoch_s") else None
    rows.append(("QAT epoch speed: tfmot time / tinylearn time", r, f">= {GOALS['qat_speed_vs_tfmot']}x",
                 None if r is None else r >= GOALS["qat_speed_vs_tfmot"]))
    d = pts(t.get("qat_acc"), k.get("qat_acc"))
    rows.append(("tinylearn QAT int8 - tfmot QAT int8 (points)", d, f">= {GOALS['qat_vs_tfmot']}",
                 None if d is None else d >= GOALS["qat_vs_tfmot"]))
    r = (t["qat_epoch_s"] / t["float_epoch_s"]) if t.get("qat_epoch_s") and t.get("float_epoch_s") else None
    rows.append(("tinylearn QAT epoch / float epoch", r, f"<= {GOALS['qat_epoch_vs_float_epoch']}x",
                 None if r is None else r <= GOALS["qat_epoch_vs_float_epoch"]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--epochs", type=int, default=None, help=f"float epochs (default {EPOCHS}; --quick: {QUICK['epochs']})")
    ap.add_argument("--qat-epochs", type=int, default=None,
                    help=f"QAT fine-tuning epochs (default {QAT_EPOCHS}; --quick: {QUICK['qat_epochs']})")
    ap.add_argument("--qat-lr", type=float, default=QAT_LR, help="QAT fine-tuning learning rate (Adam)")
    ap.add_argument("--quick", action="store_true", help="a small subset: a check that everything runs")
    ap.add_argument("--out", type=Path, default=Path("build/bench/qat.json"))
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    epochs = args.epochs or (QUICK["epochs"] if args.quick else EPOCHS)
    qat_epochs = args.qat_epochs or (QUICK["qat_epochs"] if args.quick else QAT_EPOCHS)
    if args.child:
        print(json.dumps(child(*args.child, args.quick, epochs, qat_epochs, args.qat_lr)))
        return 0
    workloads = args.workloads.split(",")
    frameworks = args.frameworks.split(",")
    bad = [w for w in workloads if w not in WORKLOADS] + [f for f in frameworks if f not in FRAMEWORKS]
    if bad:
        ap.error(f"unknown: {', '.join(bad)} (workloads: {', '.join(WORKLOADS)}; frameworks: {', '.join(FRAMEWORKS)})")
    ver = versions()
    if "tfmot" in frameworks and None in (ver["tensorflow"], ver["tf_keras"], ver["tfmot"], ver["ai_edge_litert"]):
        print("not installed: tensorflow-cpu, tf-keras, tensorflow-model-optimization or ai-edge-litert "
              "(make bench installs them); tfmot skipped", file=sys.stderr)
        frameworks = [f for f in frameworks if f != "tfmot"]
    cmd = [sys.executable, __file__, "--epochs", str(epochs), "--qat-epochs", str(qat_epochs),
           "--qat-lr", str(args.qat_lr)] + (["--quick"] if args.quick else [])
    results, failed = [], []
    start = time.perf_counter()
    for w in workloads:
        for f in frameworks:
            print(f"{w} with {f} ...", file=sys.stderr, flush=True)
            p = subprocess.run(cmd + ["--child", w, f], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            if p.returncode != 0:
                print(p.stderr[-3000:], file=sys.stderr)
                failed.append(f"{w} with {f}")
                continue
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    total = time.perf_counter() - start
    mach = machine()
    threads = os.cpu_count() or 1
    setup = {"epochs": epochs, "qat_epochs": qat_epochs, "batch": BATCH, "lr": 1e-3, "qat_lr": args.qat_lr,
             "calibration": CALIBRATION, "seed": SEED, "quick": args.quick,
             "threads": {"tinylearn": "default (all cores)" if "OMP_NUM_THREADS" not in os.environ
                         else f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}",
                         "tensorflow": f"intra-op {threads}, inter-op {threads}", "litert": 2}}
    goals = {w: [dict(zip(("measure", "value", "goal", "met"), g)) for g in goal_rows(
        w, next((r for r in results if r["workload"] == w and r["framework"] == "tinylearn"), None),
        next((r for r in results if r["workload"] == w and r["framework"] == "tfmot"), None))]
        for w in workloads}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps({"machine": mach, "versions": ver, "setup": setup, "results": results,
                               "goals": goals, "total_seconds": total}, indent=2))
    os.replace(tmp, args.out)

    print(f"\nQuantization benchmark on {mach}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v))
    n = results[0] if results else {"train": "-", "test": "-"}
    print(f"Fashion-MNIST, {n['train']} training and {n['test']} test images; float {epochs} epochs and QAT "
          f"{qat_epochs} epochs, batch {BATCH}, Adam (lr 1e-3, QAT {args.qat_lr:g}); PTQ calibrated on "
          f"{CALIBRATION} training images; threads: tinylearn {setup['threads']['tinylearn']}, TensorFlow "
          f"{setup['threads']['tensorflow']}; {total:.0f} s in all" + (" (--quick: not figures to quote)"
                                                                      if args.quick else ""))
    print("\n| workload | framework | params | float acc | float epoch (s) | PTQ int8 acc | QAT epoch (s) "
          "| QAT model acc (simulated) | QAT int8 acc | QAT epoch / float epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        name = "tinylearn" if r["framework"] == "tinylearn" else "Keras + tfmot"
        if r.get("qat_missing"):
            qat = ["n/a"] * 4
        else:
            qat = [secs(r["qat_epoch_s"]), pct(r["qat_sim_acc"]), pct(r["qat_acc"]),
                   f"{r['qat_epoch_s'] / r['float_epoch_s']:.2f}x"]
        print(f"| {r['workload']} | {name} | {r['params']} | {pct(r['float_acc'])} | {secs(r['float_epoch_s'])} "
              f"| {pct(r['ptq_acc'])} | " + " | ".join(qat) + " |")
    missing = {r["workload"]: r["qat_missing"] for r in results if r.get("qat_missing")}
    for w, why in missing.items():
        print(f"\n{w}: tinylearn QAT rows not available: {why}.")
    print("\nGoals (issue 16)\n\n| workload | measure | value | goal | met |\n|---|---|---|---|---|")
    for w, rows in goals.items():
        for g in rows:
            v = g["value"]
            shown = "n/a" if v is None else (f"{v:.2f}x" if g["goal"].endswith("x") else f"{v:+.2f}")
            met = "n/a" if g["met"] is None else ("yes" if g["met"] else "no")
            print(f"| {w} | {g['measure']} | {shown} | {g['goal']} | {met} |")
    print("\n" + "\n".join(f"- {w}: {d}" for w, d in WORKLOADS.items() if w in workloads))
    print(f"\nJSON: {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
