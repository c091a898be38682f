"""Model compression, with the names tfmot and Keras users know: quantization-aware training
(quantize_model), magnitude and filter pruning (prune_low_magnitude, prune_filters) and knowledge
distillation (Distiller)."""

from __future__ import annotations

from ._distill import Distiller
from ._filters import prune_filters
from ._prune import (ConstantSparsity, PolynomialDecay, PruningSchedule, UpdatePruningStep,
                     prune_low_magnitude, strip_pruning)
from ._qat import quantize_model

__all__ = ["ConstantSparsity", "Distiller", "PolynomialDecay", "PruningSchedule", "UpdatePruningStep",
           "prune_filters", "prune_low_magnitude", "quantize_model", "strip_pruning"]
