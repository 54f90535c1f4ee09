"""matmul: C = A . B, each rank computing a block of C's rows.

Rank 0 fills A and B; every rank multiplies its rows (a page-aligned block,
see Dsm.row_block); rank 0 checks C against numpy's own A @ B.

    ./dsmexec.py machine_file.example examples/matmul.py [n]
"""
import sys

import numpy as np

import libdsm


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    with libdsm.init() as dsm:
        a, b, c = (dsm.array((n, n), "float64") for _ in range(3))
        if dsm.rank == 0:
            rng = np.random.default_rng(42)
            a[:] = rng.random((n, n))
            b[:] = rng.random((n, n))
        dsm.barrier()
        rows = dsm.row_block(n, n * 8)
        c[rows] = a[rows] @ b
        dsm.barrier()
        if dsm.rank == 0:
            err = float(np.abs(c - np.asarray(a) @ np.asarray(b)).max())
            print("matmul n=%d on %d ranks: max error %.3g: %s"
                  % (n, dsm.size, err, "ok" if err < 1e-9 else "WRONG"))
        dsm.barrier()


if __name__ == "__main__":
    main()
