"""The test-side oracle: run a .tflite model with LiteRT (``ai_edge_litert``).

``reference=True`` selects LiteRT's BUILTIN_REF op resolver (TFLite's reference kernels, no
delegates), the kernels tinylearn's int8 core is compared with bit for bit.
"""

from __future__ import annotations

import numpy as np


def _interpreter(model_bytes: bytes, reference: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.BUILTIN
    interp = Interpreter(model_content=bytes(model_bytes), num_threads=1,
                         experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


def run_litert(model_bytes: bytes, x: np.ndarray, reference: bool = True) -> np.ndarray:
    """Run a one-input, one-output model on ``x`` and return its output.

    ``x`` holds a batch along axis 0 and has the model's input dtype. A model whose input has
    batch 1 runs sample by sample (the outputs are concatenated along axis 0); otherwise ``x``
    must have exactly the input's shape.
    """
    interp = _interpreter(model_bytes, reference)
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"run_litert takes one-input, one-output models; this one has "
                         f"{len(inputs)} inputs and {len(outputs)} outputs")
    inp, out = inputs[0], outputs[0]
    x = np.asarray(x)
    if x.dtype != inp["dtype"]:
        raise TypeError(f"the model takes {np.dtype(inp['dtype']).name} input, got {x.dtype.name}")
    in_shape = tuple(int(d) for d in inp["shape"])
    if in_shape and in_shape[0] == 1 and x.shape[1:] == in_shape[1:]:
        batches = [x[i:i + 1] for i in range(x.shape[0])]
    elif x.shape == in_shape:
        batches = [x]
    else:
        raise ValueError(f"the model's input has shape {in_shape}, got an array of shape {x.shape}")
    ys = []
    for xb in batches:
        interp.set_tensor(inp["index"], np.ascontiguousarray(xb))
        interp.invoke()
        ys.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(ys, axis=0)
