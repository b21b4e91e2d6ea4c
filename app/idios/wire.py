"""Numpy arrays inside jobs.

Jobs are JSON (orjson), in-process or through RabbitMQ. A restore of 2,000 rows carries a million
floats: as JSON numbers the API would write them out as text and the worker parse them back, at a
few hundred nanoseconds each; as little-endian bytes in base64 they cost a copy each way.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from idios.errors import Invalid

DTYPES: dict[str, np.dtype[Any]] = {np.dtype("<f4").str: np.dtype("<f4"), np.dtype("u1").str: np.dtype("u1")}


def pack_array(array: np.ndarray) -> dict[str, Any]:
    """A 2-D float32 or uint8 array as {"dtype", "shape", "base64"}, all JSON."""
    dtype = np.dtype("u1") if array.dtype == np.uint8 else np.dtype("<f4")
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return {"dtype": dtype.str, "shape": list(array.shape), "base64": base64.b64encode(data).decode("ascii")}


def to_wire(value: Any) -> Any:
    """orjson's `default` for jobs sent to a broker: a numpy array travels packed (`pack_array`).
    In-process jobs (`idios serve`) keep their arrays as they are."""
    if isinstance(value, np.ndarray):
        return pack_array(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def unpack_array(packed: Any) -> np.ndarray:
    """The array `pack_array` packed, or an array already (an in-process job); Invalid (a bad job)
    for anything else."""
    if isinstance(packed, np.ndarray) and packed.ndim == 2 and packed.dtype.str in DTYPES:
        return packed
    try:
        dtype = DTYPES[packed["dtype"]]
        rows, width = (int(size) for size in packed["shape"])
        data = binascii.a2b_base64(packed["base64"], strict_mode=True)  # b64decode's validation is a slow regex
        return np.frombuffer(data, dtype=dtype).reshape(rows, width)
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        raise Invalid(f"the job's array cannot be read ({type(exc).__name__}: {exc})", type="bad_job") from None
