"""int8 inference side by side: tinylearn's core and LiteRT on the MLPerf Tiny models, one run.

    python benchmarks/int8_bench.py [--models ds_cnn,mobilenet_v1,resnet8,fc_autoencoder]
                                    [--repeats 400] [--batch 256] [--out FILE]

Each model is built by tl.applications with random weights (He-normal kernels, so activations
keep their scale through the depth, and random batch-normalization statistics), converted by
tl.convert on random calibration data, and exported with q.to_tflite(): both runtimes run the
same int8 model. Reported per model: arena bytes (tinylearn's planned peak, next to TFLite
Micro's published arena for the model), model bytes, single-sample latency (median of
`--repeats` invokes from Python; tinylearn and LiteRT's default take turns in blocks of calls, so
that they share the machine's noisy spells: tinylearn's q.invoke as it runs by default, its host fast paths
with large operators split over both cores where its timing shows that it pays; LiteRT with its default delegates (XNNPACK) and its
default thread count (one), and for reference LiteRT with 2 threads), and batch throughput
(samples per second over `--batch` samples, the median of 10 runs, the two runtimes taking turns
in 5 blocks of 2 runs after one to warm up: tinylearn's q.invoke on the batch, both cores;
LiteRT with the input resized to the batch and 2 threads). Also each runtime's time per call
on a Dense 4 -> 4 model, what a single-sample call from Python costs before any arithmetic.
Then a busy machine (on 2 cores or more): DS-CNN's single-sample latency and batch throughput
with OMP_NUM_THREADS=1 and 2, each in its own process, under a busy loop (another process) pinned
to the last core, `--busy-repeats` times in turns; reported as 2 threads' throughput over 1's.
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

# TFLite Micro's arenas for the MLPerf Tiny reference models (the MLPerf Tiny v1.0 submissions'
# reference implementation), as the issue quotes them.
TFLM_ARENA = {"ds_cnn": 21_424, "mobilenet_v1": 156_424, "resnet8": 53_972}
SHAPES = {"ds_cnn": (49, 10, 1), "mobilenet_v1": (96, 96, 3), "resnet8": (32, 32, 3), "fc_autoencoder": (640,)}
SEED = 1
BATCH_REPEATS = 10  # batch runs timed per runtime, in turns (BATCH_BLOCKS blocks); the median counts
BATCH_BLOCKS = 5


def random_model(name: str):
    import tinylearn as tl

    model = getattr(tl.applications, name)()
    model.build(seed=SEED)
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, tl.layers.BatchNormalization):
            gamma, beta, mean, var = ws
            ws = [rng.uniform(0.8, 1.2, gamma.shape), rng.normal(0, 0.1, beta.shape),
                  rng.normal(0, 0.1, mean.shape), rng.uniform(0.8, 1.2, var.shape)]
        elif ws:
            kernel = ws[0]
            fan_in = int(np.prod(kernel.shape[:-1])) if not isinstance(layer, tl.layers.DepthwiseConv2D) \
                else int(np.prod(kernel.shape[:2]))
            ws = [rng.normal(0, np.sqrt(2.0 / fan_in), kernel.shape)] + [rng.normal(0, 0.05, w.shape) for w in ws[1:]]
        layer.set_weights([np.asarray(w, np.float32) for w in ws])
    calibration = rng.uniform(-1, 1, (32,) + SHAPES[name]).astype(np.float32)
    return tl.convert(model, calibration)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def median_seconds_in_blocks(fns, repeats: int, blocks: int = 8) -> list:
    """The median time of each function over `repeats` calls, made in blocks that take turns
    (a a a .. b b b .. a a a ..), so that all see the same spells of a noisy machine. Within a
    block the calls follow each other, as in a loop; the first of each block, after the other
    runtime has run (and evicted caches, and let idle threads sleep), is not timed."""
    times = [[] for _ in fns]
    per_block = max(1, repeats // blocks)
    for _ in range(blocks):
        for fn, ts in zip(fns, times):
            fn()
            for _ in range(per_block):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def litert_single(tfl: bytes, x1: np.ndarray, threads: int):
    """A single-sample call of LiteRT on the model, as a user makes it: set the input, invoke, get
    the output."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tfl, num_threads=threads)
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def call():
        it.set_tensor(i_in, x1)
        it.invoke()
        return it.get_tensor(i_out)

    return call


def bench(name: str, repeats: int, batch: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    q = random_model(name)
    rng = np.random.default_rng(SEED + 1)
    x1 = rng.integers(-128, 128, (1,) + q.input_shape[1:], dtype=np.int8)
    xb = rng.integers(-128, 128, (batch,) + q.input_shape[1:], dtype=np.int8)
    tfl = q.to_tflite()

    # Ours and LiteRT's default in turns; LiteRT with 2 threads apart (its threads and our pool's
    # helper would compete for the 2 cores while either spins between calls).
    litert_one = litert_single(tfl, x1, 1)
    ours_1, theirs_1 = median_seconds_in_blocks([lambda: q.invoke(x1), litert_one], repeats)
    agree = bool(np.array_equal(litert_one().reshape(-1), q.invoke(x1).reshape(-1)))
    theirs_1_2threads = median_seconds(litert_single(tfl, x1, 2), repeats)

    # Batches in turns too: the first call of each block (untimed) lets the other runtime's
    # threads settle, and both see the same spells of the machine's noise.
    itb = Interpreter(model_content=tfl, num_threads=2)
    itb.resize_tensor_input(itb.get_input_details()[0]["index"], [batch, *q.input_shape[1:]])
    itb.allocate_tensors()
    itb.set_tensor(itb.get_input_details()[0]["index"], xb)
    ours_b, theirs_b = median_seconds_in_blocks([lambda: q.invoke(xb), itb.invoke], BATCH_REPEATS,
                                                BATCH_BLOCKS)
    ours_batch, theirs_batch = batch / ours_b, batch / theirs_b

    from tinylearn.quantize import op_macs
    return {"model": name, "macs": int(sum(op_macs(q.graph, op) for op in q.graph.ops)),
            "arena_bytes": q.arena_bytes, "tflm_arena_bytes": TFLM_ARENA.get(name),
            "model_bytes": q.size_bytes, "tflite_bytes": len(tfl),
            "latency_ms": 1e3 * ours_1, "litert_latency_ms": 1e3 * theirs_1,
            "litert_2_threads_latency_ms": 1e3 * theirs_1_2threads,
            "batch_per_s": ours_batch, "litert_batch_per_s": theirs_batch,
            "litert_default_equals_ours": agree}


def call_overhead(repeats: int) -> dict:
    """Per-call time of each runtime on a model that computes almost nothing (Dense 4 -> 4): what a
    single-sample call from Python costs before any arithmetic, timed in turns like the models."""
    import tinylearn as tl

    model = tl.Sequential([tl.layers.Dense(4, input_shape=(4,))])
    model.build(seed=SEED)
    q = tl.convert(model, np.random.default_rng(SEED).uniform(-1, 1, (16, 4)).astype(np.float32))
    x1 = np.zeros((1, 4), np.int8)
    ours, theirs = median_seconds_in_blocks(
        [lambda: q.invoke(x1), litert_single(q.to_tflite(), x1, 1)], repeats)
    return {"ours_us": 1e6 * ours, "litert_us": 1e6 * theirs}


def busy_child() -> dict:
    """DS-CNN's median single-sample and batch times in this process (its OMP_NUM_THREADS)."""
    q = random_model("ds_cnn")
    rng = np.random.default_rng(SEED + 1)
    x1 = rng.integers(-128, 128, (1,) + q.input_shape[1:], dtype=np.int8)
    xb = rng.integers(-128, 128, (256,) + q.input_shape[1:], dtype=np.int8)
    return {"single_s": median_seconds(lambda: q.invoke(x1), 1000),
            "batch_s_per_sample": median_seconds(lambda: q.invoke(xb), BATCH_REPEATS) / len(xb)}


def busy_machine(repeats: int) -> dict | None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or repeats < 1:
        return None
    loop = f"import os\nos.sched_setaffinity(0, {{{cores[-1]}}})\nwhile True: pass"
    runs = {"1": [], "2": []}
    spinner = subprocess.Popen([sys.executable, "-c", loop])
    try:
        for _ in range(repeats):
            for threads, out in runs.items():
                print(f"int8 ds_cnn under a busy loop, {threads} thread(s) ...", file=sys.stderr, flush=True)
                p = subprocess.run([sys.executable, __file__, "--busy-child"], capture_output=True, text=True,
                                   check=True, env={**os.environ, "OMP_NUM_THREADS": threads})
                out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    finally:
        spinner.kill()
        spinner.wait()
    med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for t, rs in runs.items()}
    return {"busy_core": cores[-1], "runs": runs, "median": med}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SHAPES))
    ap.add_argument("--repeats", type=int, default=400)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("build/bench/int8.json"))
    ap.add_argument("--busy-repeats", type=int, default=2,
                    help="runs of each busy-machine configuration (0: no busy-machine line)")
    ap.add_argument("--busy-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.busy_child:
        print(json.dumps(busy_child()))
        return 0
    results = []
    for name in args.models.split(","):
        print(f"int8 {name} ...", file=sys.stderr, flush=True)
        results.append(bench(name, args.repeats, args.batch))
    overhead = call_overhead(args.repeats)
    busy = busy_machine(args.busy_repeats)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    machine = f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results,
                                    "call_overhead": overhead, "busy_machine": busy}, indent=2))
    print(f"\nint8 inference benchmark on {machine}")
    print("\n| model | MACs | arena (B) | TFLM arena (B) | arena / TFLM | model (B) | latency (ms) | LiteRT (ms) "
          "| LiteRT / ours | LiteRT 2 threads (ms) | batch (samples/s) | LiteRT batch | ours / LiteRT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        tflm = r["tflm_arena_bytes"]
        ratio = f"{r['arena_bytes'] / tflm:.2f}" if tflm else "-"
        print(f"| {r['model']} | {r['macs']:,} | {r['arena_bytes']:,} | {f'{tflm:,}' if tflm else '-'} | {ratio} "
              f"| {r['model_bytes']:,} | {r['latency_ms']:.3f} | {r['litert_latency_ms']:.3f} "
              f"| {r['litert_latency_ms'] / r['latency_ms']:.2f}x | {r['litert_2_threads_latency_ms']:.3f} "
              f"| {r['batch_per_s']:,.0f} "
              f"| {r['litert_batch_per_s']:,.0f} | {r['batch_per_s'] / r['litert_batch_per_s']:.2f}x |")
    print(f"\nPer call from Python on a Dense 4 -> 4 model (the cost before any arithmetic): "
          f"tinylearn {overhead['ours_us']:.2f} us, LiteRT {overhead['litert_us']:.2f} us.")
    if busy:
        one, two = busy["median"]["1"], busy["median"]["2"]
        print(f"\nBusy machine (a busy loop pinned to core {busy['busy_core']}), DS-CNN, medians of "
              f"{args.busy_repeats} runs: single sample {1e3 * two['single_s']:.3f} ms with 2 threads, "
              f"{1e3 * one['single_s']:.3f} ms with 1 (throughput 2 / 1: "
              f"{one['single_s'] / two['single_s']:.2f}x); batch of 256 "
              f"{1e6 * two['batch_s_per_sample']:.1f} us per sample with 2 threads, "
              f"{1e6 * one['batch_s_per_sample']:.1f} with 1 "
              f"({one['batch_s_per_sample'] / two['batch_s_per_sample']:.2f}x).")
    print("\nLiteRT's default kernels (XNNPACK) may differ from its reference kernels by one in rare "
          "elements; 'litert_default_equals_ours' in the JSON says whether they agreed on this input.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
