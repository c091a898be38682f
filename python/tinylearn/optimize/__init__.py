"""Model compression, with the names tfmot and Keras users know: quantization-aware training
(quantize_model) and knowledge distillation (Distiller)."""

from __future__ import annotations

from ._distill import Distiller
from ._qat import quantize_model

__all__ = ["Distiller", "quantize_model"]
