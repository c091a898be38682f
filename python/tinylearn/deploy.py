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

__all__ = ["BOARDS", "Firmware", "FirmwareRun", "build_firmware", "missing_tools", "qemu_command"]

# Board name -> QEMU machine. Flash and RAM regions come from each board's linker script.
BOARDS = {"netduinoplus2": {"qemu_machine": "netduinoplus2", "mcu": "STM32F405 (Cortex-M4F)",
                            "flash": (0x08000000, 1024 * 1024), "ram": (0x20000000, 128 * 1024)}}

# What building and running firmware need: name -> (what it is, Debian/Ubuntu package, whether
# pip's `tinylearn[deploy]` extra provides it instead).
_NEEDS = {
    "arm-none-eabi-gcc": ("the Arm cross compiler", "gcc-arm-none-eabi", False),
    "newlib": ("newlib-nano, the firmware's C library (libc_nano.a, nano.specs)", "libnewlib-arm-none-eabi", False),
    "libstdc++_nano": ("the C++ library for newlib-nano (libstdc++_nano.a)", "libstdc++-arm-none-eabi-newlib", False),
    "cmake": ("CMake", "cmake", True),
    "qemu-system-arm": ("QEMU, the emulator that runs the firmware", "qemu-system-arm", False),
}
_BUILD_NEEDS = ("arm-none-eabi-gcc", "newlib", "libstdc++_nano", "cmake")
_RUN_NEEDS = ("qemu-system-arm",)
# The libraries that arm-none-eabi-gcc must find for the boards' CPU (firmware/cmake/arm-none-eabi.cmake).
_ARM_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
_LIBRARIES = {"newlib": ("libc_nano.a", "nano.specs"), "libstdc++_nano": ("libstdc++_nano.a",)}


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


def _which(name: str) -> str | None:
    # cmake and ninja from PyPI first, then the venv's own bin folder, then PATH.
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which(name, path=os.pathsep.join(_pypi_bin(name) + [venv_bin, os.environ.get("PATH", "")]))


def _missing(names) -> dict[str, str]:
    """What is missing among `names` (keys of _NEEDS), each with why."""
    out = {}
    gcc = _which("arm-none-eabi-gcc")
    for name in names:
        if name not in _LIBRARIES:
            if _which(name) is None:
                out[name] = "not found on PATH"
        elif gcc is None:
            out[name] = "cannot be checked without arm-none-eabi-gcc"
        else:
            for lib in _LIBRARIES[name]:
                # gcc prints the full path of a file it finds, and the bare name of one it does not.
                p = subprocess.run([gcc, *_ARM_FLAGS, f"-print-file-name={lib}"], capture_output=True, text=True)
                if not os.path.isabs(p.stdout.strip()):
                    out[name] = f"arm-none-eabi-gcc does not find {lib}"
                    break
    return out


def missing_tools(build: bool = True, run: bool = True) -> list[str]:
    """What build_firmware (`build`) and Firmware.run (`run`) need and this machine lacks:
    names among 'arm-none-eabi-gcc', 'newlib', 'libstdc++_nano', 'cmake', 'qemu-system-arm'."""
    return list(_missing((_BUILD_NEEDS if build else ()) + (_RUN_NEEDS if run else ())))


def _require(what: str, names) -> None:
    """Raises RuntimeError naming each missing tool and the lines that install them."""
    missing = _missing(names)
    if not missing:
        return
    lines = [f"{what} needs what this machine lacks:"]
    lines += [f"  {name} ({_NEEDS[name][0]}): {why}" for name, why in missing.items()]
    pip = any(_NEEDS[name][2] for name in missing)
    colab_apt = " ".join(_NEEDS[name][1] for name in missing if not _NEEDS[name][2])
    lines += ["On Debian/Ubuntu:", f"  sudo apt-get install {' '.join(_NEEDS[name][1] for name in missing)}"]
    if pip:
        lines.append("  (or CMake from PyPI: pip install 'tinylearn[deploy]')")
    lines.append("In Colab (in a notebook cell):")
    if colab_apt:
        lines.append(f"  !apt-get install -y {colab_apt}")
    if pip:
        lines.append("  !pip install 'tinylearn[deploy]'")
    raise RuntimeError("\n".join(lines))


@dataclass(frozen=True)
class FirmwareRun:
    """Outputs of the firmware for each input sample, and instructions per inference."""

    outputs: np.ndarray        # int8 (N, outputs); float32 for a model ending with DEQUANTIZE
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
        dtype = self.model.input_dtype  # int8, or float32 for a model starting with QUANTIZE
        article = "an" if dtype == np.int8 else "a"
        if x.dtype != dtype:
            raise TypeError(f"run: expected {article} {dtype.name} array, got dtype {x.dtype}")
        sample = tuple(self.model.input_shape[1:])
        if x.ndim == 1 and sample == (1,):
            x = x.reshape(-1, 1)
        if x.shape[1:] != sample or x.shape[0] == 0:
            raise ValueError(f"run: expected a non-empty {dtype.name} array of shape "
                             f"(N, {', '.join(map(str, sample))}), got {x.shape}")
        with tempfile.TemporaryDirectory(prefix="tinylearn-fw-") as d:
            Path(d, "input.bin").write_bytes(np.ascontiguousarray(x, dtype=dtype.newbyteorder("<")).tobytes())
            try:
                p = subprocess.run(qemu_command(self.elf, self.board), cwd=d, stdin=subprocess.DEVNULL, capture_output=True,
                                   text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"the firmware did not finish within {timeout} s on QEMU") from None
        out_dtype = self.model.output_dtype
        out = _parse_run(p, len(x), int(np.prod(self.model.output_shape[1:])) * out_dtype.itemsize)
        y = out.outputs.view(out_dtype.newbyteorder("<")).astype(out_dtype)
        return FirmwareRun(y.reshape((len(x),) + tuple(self.model.output_shape[1:])), out.instructions)

    def __repr__(self) -> str:
        return f"Firmware({self.elf.name}, board={self.board!r}, flash={self.flash_bytes} B, ram={self.ram_bytes} B)"


def qemu_command(elf, board: str = "netduinoplus2") -> list[str]:
    """The QEMU command line that runs a firmware ELF: USART1 on stdout, semihosting for input
    and exit, and `-icount shift=0` so that the virtual clock counts guest instructions."""
    _require("running firmware on QEMU", _RUN_NEEDS)
    return [_which("qemu-system-arm"), "-M", BOARDS[board]["qemu_machine"], "-nographic",
            "-monitor", "none", "-serial", "stdio", "-semihosting-config", "enable=on,target=native",
            "-icount", "shift=0", "-kernel", str(Path(elf).resolve())]


def _parse_run(p: subprocess.CompletedProcess, n: int, out_bytes: int) -> FirmwareRun:
    """The firmware's output lines: (n, out_bytes) bytes as int8, and the instruction counts."""
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
    if out.shape != (n, out_bytes):
        raise RuntimeError(f"the firmware printed outputs of {out.shape[1]} bytes, expected {out_bytes}")
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


# Flash the firmware needs besides the model: vectors, startup, harness and the core with every
# operator (arm-none-eabi-gcc 12.2, -Os, TL_OPS=ALL: 14.5 KB of text; a model using fewer
# operators needs less). The default stack (firmware/CMakeLists.txt, TL_STACK_SIZE).
_RUNTIME_FLASH_BYTES = 16 * 1024
_DEFAULT_STACK_BYTES = 1024


def _check_fits(model: Int8Model, board: str, stack_bytes: int | None) -> None:
    """Refuses, before any build, a model whose blob and runtime exceed the board's flash or
    whose arena and stack exceed its RAM."""
    flash_size, ram_size = BOARDS[board]["flash"][1], BOARDS[board]["ram"][1]
    stack = _DEFAULT_STACK_BYTES if stack_bytes is None else int(stack_bytes)
    flash = model.size_bytes + _RUNTIME_FLASH_BYTES
    ram = (model.arena_bytes + 3) // 4 * 4 + stack
    if flash > flash_size or ram > ram_size:
        raise ValueError(
            f"build_firmware: the model does not fit the board {board!r}: it needs about "
            f"{flash:,} bytes of flash (model {model.size_bytes:,} + runtime code up to "
            f"{_RUNTIME_FLASH_BYTES:,}) and {ram:,} bytes of RAM (arena {model.arena_bytes:,} + "
            f"stack {stack:,}); the board has {flash_size:,} bytes of flash and {ram_size:,} "
            "bytes of RAM")


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
    _check_fits(model, board, stack_bytes)
    _require("build_firmware", _BUILD_NEEDS)
    cmake = _which("cmake")
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
    ninja = _which("ninja")
    if ninja is not None:  # else CMake's default generator (make)
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
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
