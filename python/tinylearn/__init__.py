"""tinylearn: train, compress and deploy small neural networks to microcontrollers.

    import tinylearn as tl
    model = tl.Sequential([tl.layers.Dense(16, activation="relu", input_shape=(1,)),
                           tl.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(x, y, epochs=500, batch_size=64, seed=1)
    q = tl.convert(model, representative_data=x)       # int8, TFLite int8 spec
    fw = tl.deploy.build_firmware(q, board="netduinoplus2", out_dir="fw")
    print(tl.report({"float": model, "int8": q}, x, y, board="netduinoplus2"))
"""

from . import applications, callbacks, datasets, deploy, layers, losses, optimize, optimizers, regularizers
from ._core import FORMAT_VERSION
from .layers import Input, clear_session
from .models import History, Model, Sequential
from .keras_io import from_keras
from .errors import UnsupportedModelError
from .quantize import Int8Model, ModelFormatError, convert, from_tflite, load_int8
from .report import report
from .saving import load_model

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "History",
    "Input",
    "Int8Model",
    "Model",
    "ModelFormatError",
    "Sequential",
    "UnsupportedModelError",
    "__version__",
    "applications",
    "callbacks",
    "clear_session",
    "convert",
    "datasets",
    "deploy",
    "from_keras",
    "from_tflite",
    "layers",
    "load_int8",
    "load_model",
    "losses",
    "optimize",
    "optimizers",
    "regularizers",
    "report",
]
