"""Knowledge distillation on Fashion-MNIST: a small student distilled from a CNN teacher against
the same student trained alone (same epochs, seed, optimizer, batch size), in one run on this
machine.

    python benchmarks/distill_bench.py [--teacher-epochs 5] [--epochs 5] [--alpha 0.1]
                                       [--temperature 10] [--batch-size 64] [--seed 1]
                                       [--train-samples 60000] [--out FILE]

The teacher is the training benchmark's CNN (conv16-pool-conv32-pool-64-10); the student a CNN
conv4-pool-conv8-pool-10 with under a tenth of the teacher's parameters. Both students start
from the same weights (the same seed) and see the same batches. alpha and the temperature
default to Keras's "Knowledge Distillation" example (0.1, 10). Times are wall-clock seconds of
training; the distilled student's time includes the teacher's predictions on the training set
(computed once per fit). Test accuracy on the 10,000 test images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np



def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def teacher_model(tl):
    L = tl.layers
    return tl.Sequential([L.Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                          L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                          L.Dense(64, activation="relu"), L.Dense(10)], name="teacher")


def student_model(tl):
    L = tl.layers
    return tl.Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                          L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                          L.Dense(10)], name="student")


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x), axis=1) == y))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each student")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--temperature", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, for all three models")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train-samples", type=int, default=60000, help="the first N training images")
    ap.add_argument("--out", type=Path, default=Path("build/bench/distill.json"))
    args = ap.parse_args(argv)

    import tinylearn as tl
    from tinylearn._io import write_atomic

    (xtr, ytr), (xte, yte) = tl.datasets.fashion_mnist.load_data()
    xtr = (xtr[:args.train_samples].astype(np.float32) / 255)[..., None]
    ytr = ytr[:args.train_samples].astype(np.int64)
    xte = (xte.astype(np.float32) / 255)[..., None]
    yte = yte.astype(np.int64)
    scce = tl.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit_args = {"batch_size": args.batch_size, "verbose": 0, "seed": args.seed}

    print(f"training the teacher ({args.teacher_epochs} epochs) ...", file=sys.stderr, flush=True)
    teacher = teacher_model(tl)
    teacher.compile(tl.optimizers.Adam(learning_rate=args.learning_rate), scce, ["accuracy"])
    t = time.perf_counter()
    teacher.fit(xtr, ytr, epochs=args.teacher_epochs, **fit_args)
    teacher_s = time.perf_counter() - t

    print(f"training the student alone ({args.epochs} epochs) ...", file=sys.stderr, flush=True)
    alone = student_model(tl)
    alone.compile(tl.optimizers.Adam(learning_rate=args.learning_rate), scce, ["accuracy"])
    t = time.perf_counter()
    alone.fit(xtr, ytr, epochs=args.epochs, **fit_args)
    alone_s = time.perf_counter() - t

    print(f"distilling the student ({args.epochs} epochs, alpha {args.alpha}, temperature "
          f"{args.temperature}) ...", file=sys.stderr, flush=True)
    student = student_model(tl)
    distiller = tl.optimize.Distiller(student=student, teacher=teacher)
    distiller.compile(tl.optimizers.Adam(learning_rate=args.learning_rate), ["accuracy"], scce,
                      tl.losses.KLDivergence(), alpha=args.alpha, temperature=args.temperature)
    t = time.perf_counter()
    distiller.fit(xtr, ytr, epochs=args.epochs, **fit_args)
    distilled_s = time.perf_counter() - t

    rows = [
        {"model": "teacher", "params": teacher.count_params(), "epochs": args.teacher_epochs,
         "seconds": teacher_s, "test_accuracy": accuracy(teacher, xte, yte)},
        {"model": "student alone", "params": alone.count_params(), "epochs": args.epochs,
         "seconds": alone_s, "test_accuracy": accuracy(alone, xte, yte)},
        {"model": "student distilled", "params": student.count_params(), "epochs": args.epochs,
         "seconds": distilled_s, "test_accuracy": accuracy(student, xte, yte)},
    ]
    gain = 100 * (rows[2]["test_accuracy"] - rows[1]["test_accuracy"])
    result = {"machine": machine(), "tinylearn": tl.__version__, "settings": vars(args) | {"out": str(args.out)},
              "results": rows, "gain_points": gain,
              "params_ratio": rows[1]["params"] / rows[0]["params"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=2))

    print(f"\nDistillation benchmark on {machine()}")
    print(f"Fashion-MNIST, {len(xtr)} training images, batch {args.batch_size}, Adam "
          f"{args.learning_rate:g}, seed {args.seed}; alpha {args.alpha:g}, temperature {args.temperature:g}\n")
    print("| model | parameters | epochs | time (s) | test accuracy |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['epochs']} | {r['seconds']:.1f} | "
              f"{100 * r['test_accuracy']:.2f}% |")
    print(f"\nstudent/teacher parameters: {result['params_ratio']:.3f}; distilled - alone: {gain:+.2f} points")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
