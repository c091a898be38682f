"""Model compression, with the names tfmot and Keras users know: quantization-aware training
(quantize_model) and knowledge distillation (Distiller)."""

from __future__ import annotations

from ._distill import Distiller

__all__ = ["Distiller"]
