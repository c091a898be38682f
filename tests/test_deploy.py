"""tl.deploy's check of the tools that build and run firmware: each missing one is named, with
the lines that install it on Debian/Ubuntu and in Colab."""

import shutil
import stat
import sys

import pytest

import tinylearn as tl

TOOLS = ("arm-none-eabi-gcc", "cmake", "qemu-system-arm")
APT = {"arm-none-eabi-gcc": "gcc-arm-none-eabi", "newlib": "libnewlib-arm-none-eabi",
       "libstdc++_nano": "libstdc++-arm-none-eabi-newlib", "cmake": "cmake", "qemu-system-arm": "qemu-system-arm"}
EVERYTHING = ["arm-none-eabi-gcc", "newlib", "libstdc++_nano", "cmake", "qemu-system-arm"]


@pytest.fixture
def only(tmp_path, monkeypatch):
    """only(*tools): PATH holds just these tools (links to the real ones), and no venv folder nor
    PyPI's cmake package."""
    real = {t: shutil.which(t) for t in TOOLS}

    def set_path(*tools):
        folder = tmp_path / "bin"
        folder.mkdir()
        for t in tools:
            (folder / t).symlink_to(real[t])
        monkeypatch.setenv("PATH", str(folder))
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-venv" / "bin" / "python"))
        monkeypatch.setattr(tl.deploy, "_pypi_bin", lambda name: [])
        return folder

    return set_path


def gcc_without(folder, *files):
    """A wrapper of the real arm-none-eabi-gcc that does not find `files`: it prints their bare
    names for -print-file-name, as gcc does for a file it does not find."""
    cases = "".join(f"    -print-file-name={f}) echo {f}; exit 0;;\n" for f in files)
    script = folder / "arm-none-eabi-gcc"
    real = script.resolve()
    script.unlink()
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do\n  case "$a" in\n{cases}  esac\ndone\nexec {real} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_nothing_missing_here(only):
    only(*TOOLS)
    assert tl.deploy.missing_tools() == []


def test_an_empty_path_names_everything_with_the_install_lines(only, sine_int8, tmp_path):
    only()
    assert tl.deploy.missing_tools() == EVERYTHING
    with pytest.raises(RuntimeError) as e:
        tl.deploy.build_firmware(sine_int8, out_dir=tmp_path / "fw")
    text = str(e.value)
    for name in ("arm-none-eabi-gcc", "newlib", "libstdc++_nano", "cmake"):
        assert f"\n  {name} (" in text
    assert "qemu" not in text  # building does not need the emulator
    assert ("sudo apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib "
            "cmake\n") in text
    assert "\n  !apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib\n" in text
    assert text.endswith("\n  !pip install 'tinylearn[deploy]'")
    assert "make setup" not in text and not (tmp_path / "fw").exists()


@pytest.mark.parametrize("hidden", TOOLS)
def test_each_tool_hidden_alone_is_named_alone(only, hidden):
    only(*(t for t in TOOLS if t != hidden))
    # Without the compiler its libraries cannot be looked up: they are named with it.
    expected = ["arm-none-eabi-gcc", "newlib", "libstdc++_nano"] if hidden == "arm-none-eabi-gcc" else [hidden]
    assert tl.deploy.missing_tools() == expected
    assert tl.deploy.missing_tools(build=hidden != "qemu-system-arm", run=hidden == "qemu-system-arm") == expected


@pytest.mark.parametrize("package, files", [("libstdc++_nano", ["libstdc++_nano.a"]),
                                            ("newlib", ["libc_nano.a", "nano.specs"]),
                                            ("newlib", ["nano.specs"])])
def test_missing_libraries_are_found_through_the_compiler(only, sine_int8, tmp_path, package, files):
    gcc_without(only(*TOOLS), *files)
    assert tl.deploy.missing_tools() == [package]
    with pytest.raises(RuntimeError) as e:
        tl.deploy.build_firmware(sine_int8, out_dir=tmp_path / "fw")
    text = str(e.value)
    assert f"  {package} (" in text and f"arm-none-eabi-gcc does not find {files[0]}" in text
    assert f"  sudo apt-get install {APT[package]}\n" in text
    assert text.endswith(f"  !apt-get install -y {APT[package]}")


def test_running_needs_qemu(only, tmp_path):
    only("arm-none-eabi-gcc", "cmake")
    with pytest.raises(RuntimeError) as e:
        tl.deploy.qemu_command(tmp_path / "fw.elf")
    text = str(e.value)
    assert "  qemu-system-arm (QEMU" in text and "not found on PATH" in text
    assert "  sudo apt-get install qemu-system-arm\n" in text
    assert text.endswith("\n  !apt-get install -y qemu-system-arm")
