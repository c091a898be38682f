"""tinylearn's public exception classes for models it reads."""

from __future__ import annotations

__all__ = ["UnsupportedModelError"]


class UnsupportedModelError(ValueError):
    """A well-formed model (a .tflite file, a graph) that tinylearn's int8 core does not run: an
    operator, a type, an option or a shape outside what it supports. The message names the
    operator (its index and type) and what was expected."""
