"""Independent NumPy references for the tests: the blob format parsed from its documentation
(cpp/include/tinylearn/micro/format.h) and TFLite's int8 arithmetic written from its definition."""

from __future__ import annotations

import struct

import numpy as np

HEADER = struct.Struct("<4sHHIIIHHHHI")
TENSOR = struct.Struct("<BBBB4iIfi")
OP = struct.Struct("<HBB6H2HIII")
FC_PARAMS = struct.Struct("<6i")
FC_REF_PARAMS = struct.Struct("<6iIIi")  # the 36-byte variant: TFLite's reference requantization
# Parameter structs by opcode (format.h): FULLY_CONNECTED 1, CONV_2D 3, DEPTHWISE_CONV_2D 4,
# MAX_POOL_2D 5, AVERAGE_POOL_2D 6, MEAN 7, ADD 8, CONCATENATION 9, SOFTMAX 10, RELU 11,
# RESHAPE 12 (none), QUANTIZE 13, DEQUANTIZE 14.
OP_PARAMS = {1: FC_PARAMS, 3: struct.Struct("<10i"), 4: struct.Struct("<11i"), 5: struct.Struct("<8i"),
             6: struct.Struct("<8i"), 7: struct.Struct("<4i"), 8: struct.Struct("<12i"),
             9: struct.Struct("<i"), 10: struct.Struct("<3i"), 11: struct.Struct("<6i"),
             12: struct.Struct("<"), 13: struct.Struct("<4if"), 14: struct.Struct("<if")}


def parse_blob(blob: bytes) -> dict:
    (magic, version, header_bytes, total, crc, arena, n_tensors, n_ops, inp, out,
     flags) = HEADER.unpack_from(blob, 0)
    tensors = []
    for i in range(n_tensors):
        typ, rank, storage, _, *rest = TENSOR.unpack_from(blob, 32 + 32 * i)
        dims, (offset, scale, zp) = rest[:4], rest[4:]
        t = {"type": typ, "rank": rank, "storage": storage, "dims": tuple(dims[:rank]),
             "offset": offset, "scale": scale, "zero_point": zp}
        if storage == 2:
            dtype = np.int8 if typ == 1 else np.dtype("<i4")
            count = int(np.prod(t["dims"]))
            t["data"] = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(t["dims"])
        tensors.append(t)
    ops = []
    for k in range(n_ops):
        opcode, n_in, n_out, *rest = OP.unpack_from(blob, 32 + 32 * (n_tensors + k))
        inputs, outputs, (p_off, p_bytes, _) = rest[:6], rest[6:8], rest[8:]
        fmt = FC_REF_PARAMS if opcode == 1 and p_bytes == FC_REF_PARAMS.size else OP_PARAMS.get(opcode)
        ops.append({"opcode": opcode, "inputs": inputs[:n_in], "outputs": outputs[:n_out],
                    "params": fmt.unpack_from(blob, p_off) if fmt is not None and p_bytes == fmt.size
                    else None})
    return {"magic": magic, "version": version, "header_bytes": header_bytes, "total": total,
            "crc": crc, "arena": arena, "tensors": tensors, "ops": ops, "input": inp,
            "output": out, "flags": flags}


def _round_half_away(num: int, den: int) -> int:
    """round(num / den) with halves away from zero, exact on Python integers."""
    q, r = divmod(abs(num), den)
    return (1 if num >= 0 else -1) * (q + (2 * r >= den))


def _mbqm(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    x = ((x * (1 << left) + 2**31) % 2**32) - 2**31  # TFLite shifts in int32 (wraps)
    if x == m == -(2**31):
        high = 2**31 - 1
    else:
        high = _round_half_away(x * m, 2**31)
    return _round_half_away(high, 2**right)


def multiply_by_quantized_multiplier(x, m: int, shift: int) -> np.ndarray:
    """TFLite's double-rounding MultiplyByQuantizedMultiplier, in exact Python integers."""
    x = np.asarray(x, dtype=np.int64)
    flat = [_mbqm(int(v), int(m), int(shift)) for v in x.ravel()]
    return np.array(flat, dtype=np.int64).reshape(x.shape)


def run_int8(blob: bytes, x_q: np.ndarray) -> np.ndarray:
    """Runs a chain of FULLY_CONNECTED ops of a blob on int8 inputs (N, features)."""
    b = parse_blob(blob)
    values = {b["input"]: np.asarray(x_q, dtype=np.int64)}
    for op in b["ops"]:
        assert op["opcode"] == 1, "the reference knows FULLY_CONNECTED only"
        i, w, bias = op["inputs"][:3]
        in_off, out_off, mult, shift, lo, hi = op["params"][:6]
        x = values[i]
        acc = (x + in_off) @ b["tensors"][w]["data"].astype(np.int64).T
        if bias != 0xFFFF:
            acc = acc + b["tensors"][bias]["data"].astype(np.int64)
        assert np.all(np.abs(acc) < 2**31), "int32 accumulator overflow"
        if len(op["params"]) == 9:  # TFLite's reference: round(double(acc) * scale), halves away
            m_lo, m_hi, e = op["params"][6:]
            scale = np.ldexp(float(m_lo | (m_hi << 32)), -e)
            v = acc.astype(np.float64) * scale
            y = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64) + out_off
        else:
            y = multiply_by_quantized_multiplier(acc, mult, shift) + out_off
        values[op["outputs"][0]] = np.clip(y, lo, hi)
    return values[b["output"]].astype(np.int8)
