"""The reductions of allreduce, reduce, scan and reduce_scatter, as numpy
sees them.

A value is a number, a bool, a complex, a list or tuple of them, or a
numpy array; it is combined elementwise with an op.  sum, prod, min and
max of the numeric types of the C core (_binding.DTYPES) run in the comm
threads (libdsm/csrc/reduce.c); every other pair (bool, complex, float16,
and the logical and bitwise ops) exchanges the values and combines them
with numpy's ufunc on each rank, so the result is numpy's exactly.
"""
import numpy as np

from libdsm import _binding

UFUNCS = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum,
          "land": np.logical_and, "lor": np.logical_or, "lxor": np.logical_xor,
          "band": np.bitwise_and, "bor": np.bitwise_or, "bxor": np.bitwise_xor}
OPS = tuple(UFUNCS)


def check_op(op):
    if op not in UFUNCS:
        raise ValueError("op must be one of %s, got %r" % (", ".join(OPS), op))


def as_array(x):
    """x as a C-contiguous native-order array (a 0-d one for a number)."""
    arr = np.asarray(x)             # (ascontiguousarray would make a 0-d array 1-d)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind not in "biufc":
        raise TypeError("reduce takes numbers, bools, complex numbers, lists of them or "
                        "numeric arrays, got %s" % arr.dtype)
    return arr


def in_core(arr, op):
    """Do the comm threads combine this?"""
    return op in _binding.OPS and arr.dtype.name in _binding.DTYPES


def combine(arrays, op):
    """Every rank's array (a list by rank) combined with op."""
    return UFUNCS[op].reduce(np.stack(arrays), axis=0)


def from_bytes(data, like):
    """The bytes of a reduce result as an array of like's dtype and shape."""
    return np.frombuffer(data, dtype=like.dtype).reshape(like.shape).copy()


def like(result, x, out=None):
    """result (an array) in the form x came in: an array for an array, a
    list for a list, a tuple for a tuple, else a Python (or numpy) scalar.
    With out (an array), result is written into it and out returned."""
    result = np.asarray(result)
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != result.shape:
            raise ValueError("out must be an array of shape %s, got %r"
                             % (result.shape, getattr(out, "shape", out)))
        np.copyto(out, result, casting="same_kind")
        return out
    if isinstance(x, np.ndarray):
        return result
    if isinstance(x, (list, tuple)):
        return type(x)(result.tolist())
    return result[()] if isinstance(x, np.generic) else result.item()
