"""Weight regularizers, as keras.regularizers: pass one as a layer's kernel_regularizer."""

from __future__ import annotations

__all__ = ["L2", "l2"]


class L2:
    """Adds l2 * sum(kernel ** 2) to the loss."""

    def __init__(self, l2: float = 0.01):
        if not float(l2) >= 0:
            raise ValueError(f"L2: the factor must be >= 0, got {l2!r}")
        self.l2 = float(l2)

    def __repr__(self) -> str:
        return f"L2({self.l2})"


def l2(factor: float = 0.01) -> L2:
    return L2(factor)
