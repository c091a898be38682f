"""The firmware on the emulated STM32F405 (QEMU netduinoplus2) against the Python extension."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinylearn.deploy import qemu_command

REPO = Path(__file__).resolve().parents[1]


def build_firmware_project(build: Path, model_dir: Path, target: str, calibration: bool) -> Path:
    """Configures and builds the repository's firmware project directly with CMake."""
    subprocess.run(["cmake", "-S", str(REPO / "firmware"), "-B", str(build),
                    f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'firmware' / 'cmake' / 'arm-none-eabi.cmake'}",
                    f"-DTL_MODEL_DIR={model_dir}", f"-DTL_BUILD_CALIBRATION={'ON' if calibration else 'OFF'}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", target], check=True, capture_output=True)
    return build / f"{target}.elf"


def run_qemu(elf: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(qemu_command(elf), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
ALL_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)


def test_firmware_outputs_equal_the_extension_on_the_test_set(sine_firmware, sine_int8, sine_split):
    x_q = sine_int8.quantize_input(sine_split["test"][0])
    assert len(x_q) == 200
    y_dev, icount = sine_firmware.run(x_q)
    y_host = sine_int8.invoke(x_q)
    assert y_dev.dtype == np.int8 and y_dev.shape == y_host.shape == (200, 1)
    np.testing.assert_array_equal(y_dev, y_host)
    assert icount.shape == (200,) and (icount > 0).all()


def test_firmware_equals_extension_on_every_int8_input(sine_firmware, sine_int8):
    y_dev, _ = sine_firmware.run(ALL_INT8)
    np.testing.assert_array_equal(y_dev, sine_int8.invoke(ALL_INT8))


def test_instruction_counts_are_deterministic(sine_firmware):
    x = ALL_INT8[::16]
    first = sine_firmware.run(x).instructions
    second = sine_firmware.run(x).instructions
    np.testing.assert_array_equal(first, second)
    # 321 multiply-accumulates cannot take fewer than 321 instructions.
    assert first.min() > 321


def test_footprint_within_budget(sine_firmware, sine_int8):
    assert sine_int8.arena_bytes <= 64
    assert sine_firmware.flash_bytes <= 4096
    # Cross-check the ELF reading against the toolchain's own size tool (Berkeley format:
    # flash = text + data, RAM = data + bss, the stack being a NOBITS section).
    out = subprocess.run(["arm-none-eabi-size", str(sine_firmware.elf)], check=True,
                         capture_output=True, text=True).stdout.splitlines()[1].split()
    text, data, bss = (int(v) for v in out[:3])
    assert sine_firmware.flash_bytes == text + data
    assert sine_firmware.ram_bytes == data + bss
    assert sine_firmware.ram_bytes >= sine_int8.arena_bytes


def test_instruction_counter_calibration(sine_firmware, tmp_path):
    """The counter the firmware reports against hand-written code of known instruction counts."""
    elf = build_firmware_project(tmp_path / "calib", sine_firmware.elf.parent / "model",
                                 "tinylearn_calib", calibration=True)
    p = run_qemu(elf, tmp_path)
    cases = re.findall(r"^CAL (\S+) (\d+) (\d+)$", p.stdout, re.M)
    assert len(cases) >= 5, p.stdout
    assert all(expected == measured for _, expected, measured in cases), p.stdout
    assert "CAL OK" in p.stdout and p.returncode == 0


def test_run_rejects_bad_input(sine_firmware):
    with pytest.raises(TypeError, match="expected an int8 array, got dtype float64"):
        sine_firmware.run(np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"expected a non-empty int8 array of shape \(N, 1\)"):
        sine_firmware.run(np.zeros((2, 3), dtype=np.int8))


def test_build_firmware_rejects_bad_arguments(sine_int8, tmp_path):
    import tinylearn as tl

    with pytest.raises(ValueError, match="unknown board 'bluepill'"):
        tl.deploy.build_firmware(sine_int8, board="bluepill", out_dir=tmp_path)
    with pytest.raises(TypeError, match="expected an Int8Model"):
        tl.deploy.build_firmware(b"model", out_dir=tmp_path)


def test_firmware_rejects_a_corrupt_model_with_a_status(sine_firmware, tmp_path):
    """A blob corrupted after export: the core on the device refuses it (checksum), no crash."""
    model_dir = tmp_path / "model"
    shutil.copytree(sine_firmware.elf.parent / "model", model_dir)
    source = model_dir / "tl_model.cc"
    text = source.read_text()
    first = text.index("0x", text.index("{"))
    # Byte 40 of the blob lies in the records, which the checksum covers.
    at = first + 6 * 40
    source.write_text(text[:at] + "0x5a" + text[at + 4:])
    elf = build_firmware_project(tmp_path / "build", model_dir, "tinylearn_fw", calibration=False)
    (tmp_path / "input.bin").write_bytes(bytes(1))
    p = run_qemu(elf, tmp_path)
    assert p.returncode != 0
    assert p.stdout.strip() == "ERR init 5"  # TLM_ERR_CHECKSUM
