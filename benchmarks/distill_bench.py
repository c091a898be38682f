"""Knowledge distillation on Fashion-MNIST: a small student distilled from a CNN teacher against
the same student trained alone (same data, epochs, seed, optimizer and batch size), in one run
on this machine.

    python benchmarks/distill_bench.py [--teacher-epochs 5] [--epochs 5] [--alpha 0.1]
                                       [--temperature 2] [--subset 3000] [--subset-epochs 20]
                                       [--subset-seeds 1,2,3] [--seed 1] [--out FILE]

The teacher is the training benchmark's CNN (conv16-pool-conv32-pool-64-10), trained on the
60,000 training images; the student a CNN conv8-pool-conv16-pool-10 with under a tenth of the
teacher's parameters. Two settings, the same alpha and temperature in both:
- full: the students train on the 60,000 images for --epochs epochs (seed --seed);
- subset: the students train on the first --subset images only (5%, as Hinton et al.'s 3%
  experiment) for --subset-epochs epochs, once per seed of --subset-seeds; the teacher is the
  same one (trained on all the images).
In each pair both students start from the same weights (the same seed) and see the same
batches. Times are wall-clock seconds of training; a distilled student's time includes the
teacher's predictions on its training images (computed once per fit). Test accuracy on the
10,000 test images.
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
    return tl.Sequential([L.Conv2D(8, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                          L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                          L.Dense(10)], name="student")


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x), axis=1) == y))


def student_pair(tl, teacher, x, y, xte, yte, epochs, seed, args) -> dict:
    """The student trained alone and distilled on (x, y): test accuracies and times."""
    scce = tl.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit_args = {"batch_size": args.batch_size, "epochs": epochs, "verbose": 0, "seed": seed}
    alone = student_model(tl)
    alone.compile(tl.optimizers.Adam(learning_rate=args.learning_rate), scce, ["accuracy"])
    t = time.perf_counter()
    alone.fit(x, y, **fit_args)
    alone_s = time.perf_counter() - t
    student = student_model(tl)
    distiller = tl.optimize.Distiller(student=student, teacher=teacher)
    distiller.compile(tl.optimizers.Adam(learning_rate=args.learning_rate), ["accuracy"], scce,
                      tl.losses.KLDivergence(), alpha=args.alpha, temperature=args.temperature)
    t = time.perf_counter()
    distiller.fit(x, y, **fit_args)
    distilled_s = time.perf_counter() - t
    a, d = accuracy(alone, xte, yte), accuracy(student, xte, yte)
    return {"samples": len(x), "epochs": epochs, "seed": seed, "params": student.count_params(),
            "alone_accuracy": a, "alone_seconds": alone_s, "distilled_accuracy": d,
            "distilled_seconds": distilled_s, "gain_points": 100 * (d - a)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each student on all the images")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, for every model")
    ap.add_argument("--seed", type=int, default=1, help="the teacher's and the full setting's seed")
    ap.add_argument("--subset", type=int, default=3000, help="training images of the subset setting (0: none)")
    ap.add_argument("--subset-epochs", type=int, default=20)
    ap.add_argument("--subset-seeds", default="1,2,3")
    ap.add_argument("--out", type=Path, default=Path("build/bench/distill.json"))
    args = ap.parse_args(argv)
    started = time.perf_counter()

    import tinylearn as tl
    from tinylearn._io import write_atomic

    (xtr, ytr), (xte, yte) = tl.datasets.fashion_mnist.load_data()
    xtr = (xtr.astype(np.float32) / 255)[..., None]
    ytr = ytr.astype(np.int64)
    xte = (xte.astype(np.float32) / 255)[..., None]
    yte = yte.astype(np.int64)

    print(f"training the teacher ({args.teacher_epochs} epochs) ...", file=sys.stderr, flush=True)
    teacher = teacher_model(tl)
    teacher.compile(tl.optimizers.Adam(learning_rate=args.learning_rate),
                    tl.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    t = time.perf_counter()
    teacher.fit(xtr, ytr, batch_size=args.batch_size, epochs=args.teacher_epochs, verbose=0, seed=args.seed)
    teacher_row = {"params": teacher.count_params(), "epochs": args.teacher_epochs,
                   "seconds": time.perf_counter() - t, "accuracy": accuracy(teacher, xte, yte)}

    runs = []
    if args.epochs > 0:
        print(f"students on all {len(xtr)} images ({args.epochs} epochs) ...", file=sys.stderr, flush=True)
        runs.append({"setting": "full", **student_pair(tl, teacher, xtr, ytr, xte, yte, args.epochs, args.seed, args)})
    if args.subset > 0:
        for seed in (int(s) for s in args.subset_seeds.split(",")):
            print(f"students on {args.subset} images ({args.subset_epochs} epochs, seed {seed}) ...",
                  file=sys.stderr, flush=True)
            runs.append({"setting": "subset", **student_pair(tl, teacher, xtr[:args.subset], ytr[:args.subset],
                                                             xte, yte, args.subset_epochs, seed, args)})
    total = time.perf_counter() - started
    result = {"machine": machine(), "tinylearn": tl.__version__,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "teacher": teacher_row, "runs": runs, "total_seconds": total}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=2))

    print(f"\nDistillation benchmark on {machine()}")
    print(f"Fashion-MNIST; Adam {args.learning_rate:g}, batch {args.batch_size}; alpha {args.alpha:g}, "
          f"temperature {args.temperature:g}")
    print(f"teacher: {teacher_row['params']:,} parameters, {args.teacher_epochs} epochs on {len(xtr)} images, "
          f"{teacher_row['seconds']:.1f} s, test accuracy {100 * teacher_row['accuracy']:.2f}%\n")
    print("| student data | epochs | seed | student params (/ teacher) | alone acc | distilled acc | gain (points) "
          "| alone time (s) | distilled time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['samples']:,} images | {r['epochs']} | {r['seed']} | {r['params']:,} "
              f"({r['params'] / teacher_row['params']:.3f}) | {100 * r['alone_accuracy']:.2f}% | "
              f"{100 * r['distilled_accuracy']:.2f}% | {r['gain_points']:+.2f} | {r['alone_seconds']:.1f} | "
              f"{r['distilled_seconds']:.1f} |")
    subset = [r["gain_points"] for r in runs if r["setting"] == "subset"]
    if subset:
        print(f"\nsubset gain over {len(subset)} seeds: mean {np.mean(subset):+.2f}, min {min(subset):+.2f} points")
    print(f"total {total:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
