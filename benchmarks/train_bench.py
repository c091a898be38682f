"""Training speed side by side: tinylearn, Keras (tensorflow-cpu) and PyTorch (CPU), same model,
data, batch size and epochs, in one run on this machine. `make bench` runs it.

    python benchmarks/train_bench.py [--workloads sine,fmnist_mlp,fmnist_cnn]
                                     [--frameworks tinylearn,keras,torch] [--busy-repeats 3]
                                     [--out FILE]

Each (workload, framework) pair trains in its own process, so that peak memory (the process's
maximum resident set, imports included) and thread pools do not mix; every framework may use
all cores. Times are wall-clock seconds of training only (no imports, no data loading).

Then a busy machine (on 2 cores or more): tinylearn trains the Fashion-MNIST MLP and a shortened
CNN run with OMP_NUM_THREADS=1 and 2, with and without a busy loop (another process, pinned to
the last core), the four in turns, `--busy-repeats` times each; reported as ratios of medians:
the throughput of 2 threads over 1 under the busy loop, and the idle 2-thread speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKLOADS = {
    "sine": "sine 1-16-16-1, 600 samples, 500 epochs, batch 64 (test MSE)",
    "fmnist_mlp": "Fashion-MNIST MLP 784-128-10, 10 epochs, batch 32 (test accuracy)",
    "fmnist_cnn": "Fashion-MNIST CNN conv16-pool-conv32-pool-64-10, 5 epochs, batch 64 (test accuracy)",
}
FRAMEWORKS = ("tinylearn", "keras", "torch")
SETUP = {"sine": (500, 64), "fmnist_mlp": (10, 32), "fmnist_cnn": (5, 64)}
# The busy-machine runs: (epochs, training samples) per workload, shorter than SETUP's.
BUSY_SETUP = {"fmnist_mlp": (2, 60000), "fmnist_cnn": (1, 12000)}
SEED = 1


def load(workload: str):
    import tinylearn as tl

    if workload == "sine":
        x, y = tl.datasets.sine(1000, noise=0.1, seed=SEED)
        return x[:600], y[:600], x[800:], y[800:]
    (xtr, ytr), (xte, yte) = tl.datasets.fashion_mnist.load_data()
    xtr = (xtr.astype(np.float32) / 255)[..., None]
    xte = (xte.astype(np.float32) / 255)[..., None]
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64)


def run_tinylearn(workload, x, y, xt, yt, epochs, batch):
    import tinylearn as tl

    L = tl.layers
    if workload == "sine":
        m = tl.Sequential([L.Dense(16, activation="relu", input_shape=(1,)), L.Dense(16, activation="relu"), L.Dense(1)])
        m.compile(optimizer="adam", loss="mse")
    else:
        body = ([L.Flatten(input_shape=(28, 28, 1)), L.Dense(128, activation="relu")] if workload == "fmnist_mlp" else
                [L.Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                 L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(), L.Dense(64, activation="relu")])
        m = tl.Sequential(body + [L.Dense(10)])
        m.compile(optimizer="adam", loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    t = time.perf_counter()
    m.fit(x, y, epochs=epochs, batch_size=batch, seed=SEED, verbose=0)
    seconds = time.perf_counter() - t
    pred = m.predict(xt)
    return seconds, pred


def run_keras(workload, x, y, xt, yt, epochs, batch):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(SEED)
    Lk = keras.layers
    if workload == "sine":
        m = keras.Sequential([keras.Input((1,)), Lk.Dense(16, activation="relu"), Lk.Dense(16, activation="relu"), Lk.Dense(1)])
        m.compile(optimizer="adam", loss="mse")
    else:
        body = ([keras.Input((28, 28, 1)), Lk.Flatten(), Lk.Dense(128, activation="relu")] if workload == "fmnist_mlp" else
                [keras.Input((28, 28, 1)), Lk.Conv2D(16, 3, activation="relu"), Lk.MaxPooling2D(),
                 Lk.Conv2D(32, 3, activation="relu"), Lk.MaxPooling2D(), Lk.Flatten(), Lk.Dense(64, activation="relu")])
        m = keras.Sequential(body + [Lk.Dense(10)])
        m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    t = time.perf_counter()
    m.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, shuffle=True)
    seconds = time.perf_counter() - t
    return seconds, m.predict(xt, verbose=0, batch_size=1024)


def run_torch(workload, x, y, xt, yt, epochs, batch):
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    torch.set_num_threads(os.cpu_count() or 1)
    if workload == "sine":
        m = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
        loss_fn = nn.MSELoss()
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    else:
        if workload == "fmnist_mlp":
            m = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        else:
            m = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 64), nn.ReLU(), nn.Linear(64, 10))
        loss_fn = nn.CrossEntropyLoss()
        xs, ys = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, eps=1e-7)  # Keras's defaults
    g = torch.Generator().manual_seed(SEED)
    n = len(xs)
    t = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        xtt = torch.from_numpy(xt if workload == "sine" else np.ascontiguousarray(xt.transpose(0, 3, 1, 2)))
        pred = m(xtt).numpy()
    return seconds, pred


def child(workload: str, framework: str, busy: bool = False) -> dict:
    x, y, xt, yt = load(workload)
    epochs, batch = SETUP[workload]
    if busy:
        epochs, samples = BUSY_SETUP[workload]
        x, y = x[:samples], y[:samples]
    seconds, pred = {"tinylearn": run_tinylearn, "keras": run_keras, "torch": run_torch}[framework](
        workload, x, y, xt, yt, epochs, batch)
    if workload == "sine":
        score = float(np.mean((np.asarray(pred).reshape(-1, 1) - yt) ** 2))
    else:
        score = float(np.mean(np.asarray(pred).argmax(axis=1) == yt))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"workload": workload, "framework": framework, "seconds": seconds, "score": score,
            "peak_mib": peak_mib}


def versions() -> dict:
    out = {}
    for name, mod in (("tinylearn", "tinylearn"), ("keras", "keras"), ("tensorflow", "tensorflow"), ("torch", "torch")):
        code = f"import {mod}; print({mod}.__version__)"
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        out[name] = p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--out", type=Path, default=Path("build/bench/train.json"))
    ap.add_argument("--busy-repeats", type=int, default=3,
                    help="runs of each busy-machine configuration (0: no busy-machine section)")
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "FRAMEWORK"), help=argparse.SUPPRESS)
    ap.add_argument("--busy-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, busy=args.busy_child)))
        return 0
    workloads = args.workloads.split(",")
    frameworks = args.frameworks.split(",")
    ver = versions()
    missing = [f for f in frameworks if f != "tinylearn" and ver.get(f) is None]
    if missing:
        print(f"not installed: {', '.join(missing)} (pip install '.[bench]'); skipped", file=sys.stderr)
        frameworks = [f for f in frameworks if f not in missing]
    results = []
    for w in workloads:
        for f in frameworks:
            print(f"training {w} with {f} ...", file=sys.stderr, flush=True)
            p = subprocess.run([sys.executable, __file__, "--child", w, f], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            if p.returncode != 0:
                print(p.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{w} with {f} failed")
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    machine = f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"
    busy = busy_machine([w for w in workloads if w in BUSY_SETUP], args.busy_repeats) \
        if "tinylearn" in frameworks else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "versions": ver, "results": results,
                                    "busy_machine": busy}, indent=2))
    print(f"\nTraining benchmark on {machine}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v))
    print(f"\n| workload | framework | time (s) | peak memory (MiB) | test score | time vs tinylearn |")
    print("|---|---|---|---|---|---|")
    for w in workloads:
        rows = [r for r in results if r["workload"] == w]
        base = next((r for r in rows if r["framework"] == "tinylearn"), None)
        for r in rows:
            ratio = f"{r['seconds'] / base['seconds']:.2f}x" if base else "-"
            score = f"MSE {r['score']:.4f}" if w == "sine" else f"acc {100 * r['score']:.2f}%"
            print(f"| {w} | {r['framework']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {score} | {ratio} |")
    print("\n" + "\n".join(f"- {w}: {d}" for w, d in WORKLOADS.items() if w in workloads))
    if busy:
        print(f"\nBusy machine: tinylearn with a busy loop pinned to core {busy[0]['busy_core']} "
              f"(medians of {args.busy_repeats} runs, ranges in brackets)")
        print("\n| workload | idle 1 thread (s) | idle 2 threads (s) | idle speedup | busy 1 thread (s) "
              "| busy 2 threads (s) | busy: 2 threads / 1 thread throughput |")
        print("|---|---|---|---|---|---|---|")
        for b in busy:
            t = {k: statistics.median(v) for k, v in b["seconds"].items()}
            span = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in b["seconds"].items()}
            print(f"| {b['workload']} ({b['epochs']} epoch(s), {b['samples']} samples) "
                  f"| {t['idle_1']:.2f} [{span['idle_1']}] | {t['idle_2']:.2f} [{span['idle_2']}] "
                  f"| {t['idle_1'] / t['idle_2']:.2f}x | {t['busy_1']:.2f} [{span['busy_1']}] "
                  f"| {t['busy_2']:.2f} [{span['busy_2']}] | {t['busy_1'] / t['busy_2']:.2f}x |")
    return 0


def busy_machine(workloads, repeats: int) -> list:
    """tinylearn's training time with 1 and 2 threads, on an idle machine and with a busy loop
    pinned to the last core, the four configurations in turns (so that they share the spells of
    a noisy machine)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or repeats < 1 or not workloads:
        return []
    busy_core = cores[-1]
    loop = f"import os\nos.sched_setaffinity(0, {{{busy_core}}})\nwhile True: pass"
    out = []
    for w in workloads:
        seconds = {"idle_1": [], "idle_2": [], "busy_1": [], "busy_2": []}
        for _ in range(repeats):
            for key in seconds:
                print(f"training {w} with tinylearn, {key.replace('_', ', ')} thread(s) ...", file=sys.stderr,
                      flush=True)
                spinner = subprocess.Popen([sys.executable, "-c", loop]) if key.startswith("busy") else None
                try:
                    p = subprocess.run([sys.executable, __file__, "--child", w, "tinylearn", "--busy-child"],
                                       capture_output=True, text=True,
                                       env={**os.environ, "OMP_NUM_THREADS": key[-1]})
                finally:
                    if spinner:
                        spinner.kill()
                        spinner.wait()
                if p.returncode != 0:
                    print(p.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{w} with tinylearn ({key}) failed")
                seconds[key].append(json.loads(p.stdout.strip().splitlines()[-1])["seconds"])
        epochs, samples = BUSY_SETUP[w]
        out.append({"workload": w, "epochs": epochs, "samples": samples, "busy_core": busy_core,
                    "seconds": seconds})
    return out


if __name__ == "__main__":
    sys.exit(main())
