"""Build bare-metal firmware around an int8 model and run it on the emulated board."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .quantize import Int8Model

__all__ = ["BOARDS", "Firmware", "FirmwareRun", "build_firmware", "qemu_command"]

# Board name -> QEMU machine. Flash and RAM regions come from each board's linker script.
BOARDS = {"netduinoplus2": {"qemu_machine": "netduinoplus2", "mcu": "STM32F405 (Cortex-M4F)",
                            "flash": (0x08000000, 1024 * 1024), "ram": (0x20000000, 128 * 1024)}}

_APT_HINT = ("install Debian's packages gcc-arm-none-eabi, libnewlib-arm-none-eabi and "
             "qemu-system-arm (or run 'make setup' in the tinylearn repository)")


def _firmware_source() -> tuple[Path, Path]:
    """The firmware project and the inference core sources shipped with the package."""
    pkg = Path(__file__).resolve().parent / "firmware"
    if (pkg / "CMakeLists.txt").is_file():
        return pkg, pkg / "core"
    repo = Path(__file__).resolve().parents[2]  # running from a source checkout
    return repo / "firmware", repo / "cpp"


def _pypi_bin(name: str) -> list[str]:
    """The folder of PyPI's cmake or ninja (the `[deploy]` extra), wherever pip put its scripts."""
    try:
        if name == "cmake":
            import cmake
            return [cmake.CMAKE_BIN_DIR]
        if name == "ninja":
            import ninja
            return [ninja.BIN_DIR]
    except ImportError:
        pass
    return []


def _tool(name: str) -> str:
    # cmake and ninja from PyPI first, then the venv's own bin folder, then PATH.
    venv_bin = str(Path(sys.executable).parent)
    path = shutil.which(name, path=os.pathsep.join(_pypi_bin(name) + [venv_bin, os.environ.get("PATH", "")]))
    if path is None:
        raise RuntimeError(f"{name} was not found on PATH: {_APT_HINT}")
    return path


@dataclass(frozen=True)
class FirmwareRun:
    """Outputs of the firmware for each input sample, and instructions per inference."""

    outputs: np.ndarray        # int8 (N, outputs)
    instructions: np.ndarray   # int64 (N,), guest instructions inside tlm_invoke

    def __iter__(self):  # y, icount = fw.run(x)
        return iter((self.outputs, self.instructions))


class Firmware:
    """A built firmware image (ELF) for `board`, holding `model`."""

    def __init__(self, elf: Path, board: str, model: Int8Model):
        self.elf = Path(elf)
        self.board = board
        self.model = model
        self.flash_bytes, self.ram_bytes = _elf_footprint(self.elf, BOARDS[board])

    def run(self, x_int8, timeout: float = 120.0) -> FirmwareRun:
        """Runs the firmware on QEMU (`-icount shift=0`: deterministic instruction counts).

        The inputs reach the firmware through semihosting; it prints each output over USART1.
        """
        x = np.asarray(x_int8)
        if x.dtype != np.int8:
            raise TypeError(f"run: expected an int8 array, got dtype {x.dtype}")
        sample = tuple(self.model.input_shape[1:])
        if x.ndim == 1 and sample == (1,):
            x = x.reshape(-1, 1)
        if x.shape[1:] != sample or x.shape[0] == 0:
            raise ValueError(f"run: expected a non-empty int8 array of shape (N, {', '.join(map(str, sample))}), "
                             f"got {x.shape}")
        with tempfile.TemporaryDirectory(prefix="tinylearn-fw-") as d:
            Path(d, "input.bin").write_bytes(np.ascontiguousarray(x).tobytes())
            try:
                p = subprocess.run(qemu_command(self.elf, self.board), cwd=d, stdin=subprocess.DEVNULL, capture_output=True,
                                   text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"the firmware did not finish within {timeout} s on QEMU") from None
        out = _parse_run(p, len(x), int(np.prod(self.model.output_shape[1:])))
        return FirmwareRun(out.outputs.reshape((len(x),) + tuple(self.model.output_shape[1:])), out.instructions)

    def __repr__(self) -> str:
        return f"Firmware({self.elf.name}, board={self.board!r}, flash={self.flash_bytes} B, ram={self.ram_bytes} B)"


def qemu_command(elf, board: str = "netduinoplus2") -> list[str]:
    """The QEMU command line that runs a firmware ELF: USART1 on stdout, semihosting for input
    and exit, and `-icount shift=0` so that the virtual clock counts guest instructions."""
    return [_tool("qemu-system-arm"), "-M", BOARDS[board]["qemu_machine"], "-nographic",
            "-monitor", "none", "-serial", "stdio", "-semihosting-config", "enable=on,target=native",
            "-icount", "shift=0", "-kernel", str(Path(elf).resolve())]


def _parse_run(p: subprocess.CompletedProcess, n: int, out_features: int) -> FirmwareRun:
    outputs, counts, done = [], [], None
    for line in p.stdout.splitlines():
        parts = line.strip().split()
        if not parts:
            continue
        if parts[0] == "ERR":
            raise RuntimeError(f"the firmware reported an error: {line.strip()}")
        if parts[0] == "O" and len(parts) == 3:
            outputs.append(np.frombuffer(bytes.fromhex(parts[1]), dtype=np.int8))
            counts.append(int(parts[2]))
        elif parts[0] == "DONE":
            done = int(parts[1])
    if p.returncode != 0 or done != n or len(outputs) != n:
        raise RuntimeError(f"the firmware run failed (exit {p.returncode}, {len(outputs)} of {n} "
                           f"outputs)\nstdout:\n{p.stdout[-2000:]}\nstderr:\n{p.stderr[-2000:]}")
    out = np.stack(outputs)
    if out.shape != (n, out_features):
        raise RuntimeError(f"the firmware printed outputs of shape {out.shape}, expected {(n, out_features)}")
    return FirmwareRun(out, np.asarray(counts, dtype=np.int64))


def _elf_footprint(elf: Path, board: dict) -> tuple[int, int]:
    """Flash bytes (everything loaded from flash) and RAM bytes (data, bss, stack) of an ELF."""
    from elftools.elf.elffile import ELFFile

    f0, fsize = board["flash"]
    r0, rsize = board["ram"]
    flash = ram = 0
    with open(elf, "rb") as fh:
        for seg in ELFFile(fh).iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            if f0 <= seg["p_paddr"] < f0 + fsize:
                flash += seg["p_filesz"]
            if r0 <= seg["p_vaddr"] < r0 + rsize:
                ram += seg["p_memsz"]
    return flash, ram


def build_firmware(model: Int8Model, board: str = "netduinoplus2", out_dir=None,
                   stack_bytes: int | None = None) -> Firmware:
    """Builds bare-metal firmware holding `model` and tinylearn's inference core.

    Uses arm-none-eabi-gcc through the firmware's CMake toolchain file. The build folder is
    `out_dir` (a new temporary folder when None); the ELF is `out_dir/tinylearn_fw.elf`.
    """
    if not isinstance(model, Int8Model):
        raise TypeError(f"build_firmware: expected an Int8Model (from tl.convert), got {type(model).__name__}")
    if board not in BOARDS:
        raise ValueError(f"build_firmware: unknown board {board!r}; expected one of {sorted(BOARDS)}")
    _tool("arm-none-eabi-gcc")
    cmake = _tool("cmake")
    src, core = _firmware_source()
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="tinylearn-fw-"))
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    model.export_c(model_dir, "tl_model")
    build = out / "build"
    args = [cmake, "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=MinSizeRel",
            f"-DCMAKE_TOOLCHAIN_FILE={src / 'cmake' / 'arm-none-eabi.cmake'}",
            f"-DTL_BOARD={board}", f"-DTL_MODEL_DIR={model_dir.resolve()}",
            f"-DTL_CORE_DIR={core.resolve()}", "-DTL_BUILD_CALIBRATION=OFF"]
    if stack_bytes is not None:
        args.append(f"-DTL_STACK_SIZE={int(stack_bytes)}")
    try:
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}"]
    except RuntimeError:
        pass  # CMake's default generator (make)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS")}
    for step in (args, [cmake, "--build", str(build)]):
        p = subprocess.run(step, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"firmware build failed: {' '.join(step)}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    elf = build / "tinylearn_fw.elf"
    if not elf.is_file():
        raise RuntimeError(f"firmware build produced no {elf}")
    final = out / "tinylearn_fw.elf"
    shutil.copyfile(elf, final)
    return Firmware(final, board, model)
