/* Layer 0: elementwise reductions of typed arrays (allreduce, reduce): sum,
 * prod, min, max, logical and bitwise (DSM_OP_*). */
#ifndef DSM_REDUCE_H
#define DSM_REDUCE_H
#include <stdint.h>

/* Size in bytes of one element of a DSM_DT_* type, or 0 if unknown. */
unsigned reduce_itemsize(int dtype);
/* acc[i] = acc[i] (op) in[i] for `count` elements: 0, or -1 for an unknown
 * dtype or op. */
int reduce_apply(int dtype, int op, void *acc, const void *in, uint64_t count);
#endif
