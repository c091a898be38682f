"""tl.deploy takes cmake and ninja from PyPI's packages (the `[deploy]` extra) wherever pip put their
scripts: a notebook's kernel often has neither the venv's bin folder nor ~/.local/bin on its PATH."""

import subprocess
import sys
from pathlib import Path

import cmake
import ninja
import pytest

from tinylearn import deploy


@pytest.mark.parametrize("name, bin_dir", [("cmake", cmake.CMAKE_BIN_DIR), ("ninja", ninja.BIN_DIR)])
def test_tool_found_through_its_pypi_package(name, bin_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                       # nothing on PATH
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # nor beside the interpreter
    path = Path(deploy._which(name))
    assert path.parent.resolve() == Path(bin_dir).resolve()
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip()


def test_missing_tool_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(RuntimeError, match="qemu-system-arm"):
        deploy._require("run", ("qemu-system-arm",))
