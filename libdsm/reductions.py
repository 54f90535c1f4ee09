"""The reductions of allreduce, reduce, scan and reduce_scatter, as numpy
sees them.

A value is a number, a bool, a complex, a list or tuple of them, or a
numpy array; it is combined elementwise with an op, with numpy's result.
The comm threads combine (libdsm/csrc/reduce.c) every op on the core's
int, uint and float types (_binding.DTYPES), bools (as 0/1 bytes, or as
int64 for sum and prod, as numpy does), and the sum of complex numbers
(as pairs of floats).  The rest (complex prod, min and max, float16, ...)
is exchanged and combined by numpy's ufunc on each rank.
"""
import numpy as np

from libdsm import _binding

UFUNCS = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum,
          "land": np.logical_and, "lor": np.logical_or, "lxor": np.logical_xor,
          "band": np.bitwise_and, "bor": np.bitwise_or, "bxor": np.bitwise_xor}
OPS = tuple(UFUNCS)
LOGICAL = ("land", "lor", "lxor")
BITWISE = ("band", "bor", "bxor")


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


def _same(result):
    return result


def in_core(arr, op):
    """How the comm threads combine arr with op: (the array to send them,
    a function from what they return to numpy's result), or None when
    numpy must."""
    kind, shape = arr.dtype.kind, arr.shape
    if kind == "b" and op in ("sum", "prod"):
        return arr.astype("int64"), _same
    if kind == "b":
        return arr.view("uint8"), lambda r: r.view(bool)
    if kind == "c" and op == "sum" and arr.dtype.itemsize in (8, 16):
        part = np.dtype("float%d" % (arr.dtype.itemsize * 4))
        return arr.reshape(-1).view(part), lambda r: r.view(arr.dtype).reshape(shape)
    if arr.dtype.name not in _binding.DTYPES or (kind == "f" and op in BITWISE):
        return None
    return arr, (lambda r: r.astype(bool)) if op in LOGICAL else _same


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
