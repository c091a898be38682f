"""Data sets for the TinyML examples: `sine` (generated) and `fashion_mnist` (Debian's files or a
one-time download)."""

from . import fashion_mnist
from ._sine import sine

__all__ = ["fashion_mnist", "sine"]
