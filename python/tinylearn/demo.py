"""`make demo`: the sine "hello world" from training to the emulated STM32F405, with a report.

    python -m tinylearn.demo [--seed 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tinylearn as tl


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _qemu_version() -> str:
    try:
        out = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


def run(seed: int = 1, out_dir: Path | None = None, verbose=1) -> dict:
    x, y = tl.datasets.sine(1000, noise=0.1, seed=seed)
    x_train, y_train = x[:600], y[:600]
    x_val, y_val = x[600:800], y[600:800]
    x_test, y_test = x[800:], y[800:]

    model = tl.Sequential([tl.layers.Dense(16, activation="relu", input_shape=(1,)),
                           tl.layers.Dense(16, activation="relu"),
                           tl.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=500, batch_size=64, validation_data=(x_val, y_val),
              seed=seed, verbose=verbose)
    train_s = time.perf_counter() - t0
    float_mse = float(np.mean((model.predict(x_test) - y_test) ** 2))

    q = tl.convert(model, representative_data=x_train)
    int8_mse = float(np.mean((q.predict(x_test) - y_test) ** 2))

    out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="tinylearn-demo-"))
    fw = tl.deploy.build_firmware(q, board="netduinoplus2", out_dir=out_dir)
    x_q = q.quantize_input(x_test)
    y_host = q.invoke(x_q)
    y_dev, icount = fw.run(x_q)
    same = int(np.sum(np.all(y_dev == y_host, axis=1)))
    return {
        "seed": seed, "train_seconds": train_s, "float_test_mse": float_mse,
        "int8_test_mse": int8_mse, "model_bytes": q.size_bytes, "arena_bytes": q.arena_bytes,
        "flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes,
        "instructions_mean": float(icount.mean()), "instructions_min": int(icount.min()),
        "instructions_max": int(icount.max()), "test_samples": len(x_test),
        "identical_outputs": same, "firmware_elf": str(fw.elf),
        "machine": f"{_cpu()}, {platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "emulator": _qemu_version(),
    }


def checks(r: dict) -> dict:
    """The foundation's acceptance targets, each True when met."""
    return {
        "float": r["float_test_mse"] <= 0.015,
        "int8": r["int8_test_mse"] <= 1.1 * r["float_test_mse"],
        "flash": r["flash_bytes"] <= 4096,
        "arena": r["arena_bytes"] <= 64,
        "equal": r["identical_outputs"] == r["test_samples"],
    }


def report(r: dict) -> str:
    ok = checks(r)
    mark = {True: "ok", False: "FAILED"}
    rows = [
        ("float test MSE", f"{r['float_test_mse']:.4f}", "<= 0.015", ok["float"]),
        ("int8 test MSE", f"{r['int8_test_mse']:.4f} ({r['int8_test_mse'] / r['float_test_mse']:.3f} x float)",
         "<= 1.1 x float", ok["int8"]),
        ("model (serialized int8)", f"{r['model_bytes']:,} bytes", "", None),
        ("arena (exact, planned)", f"{r['arena_bytes']:,} bytes", "<= 64", ok["arena"]),
        ("firmware flash", f"{r['flash_bytes']:,} bytes", "<= 4,096", ok["flash"]),
        ("firmware RAM", f"{r['ram_bytes']:,} bytes (arena, harness state, 1 KiB stack)", "", None),
        ("instructions / inference",
         f"{r['instructions_mean']:,.0f} mean ({r['instructions_min']:,}-{r['instructions_max']:,})", "", None),
        ("firmware == host", f"{r['identical_outputs']} of {r['test_samples']} outputs identical",
         "all", ok["equal"]),
        ("training time (500 epochs)", f"{r['train_seconds']:.2f} s", "", None),
    ]
    lines = [
        "",
        "tinylearn demo: sine 'hello world', 1-16-16-1 MLP, 1000 samples (60/20/20), Adam, "
        f"500 epochs, batch 64, seed {r['seed']}",
        f"host: {r['machine']}",
        f"device: STM32F405 (Cortex-M4F) on {r['emulator']}, -M netduinoplus2 -icount shift=0",
        "",
        f"{'':30}{'measured':48}{'target':16}",
    ]
    for name, value, target, good in rows:
        status = "" if good is None else mark[good]
        lines.append(f"  {name:28}{value:48}{target:16}{status}")
    lines.append("")
    lines.append("all targets met" if all(ok.values()) else
                 "SOME TARGETS FAILED: " + ", ".join(k for k, v in ok.items() if not v))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("build/demo"),
                    help="folder for the firmware build and report.json")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    r = run(seed=args.seed, out_dir=args.out, verbose=0 if args.quiet else 1)
    (args.out / "report.json").write_text(json.dumps(r, indent=2))
    print(report(r))
    return 0 if all(checks(r).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
