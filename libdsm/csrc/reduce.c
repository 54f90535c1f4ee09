/* Layer 0: elementwise reductions of typed arrays.  One loop per element
 * type and operation, generated below, with numpy's results: integers wrap
 * around, a NaN wins min and max, a logical op gives 1 or 0 (nonzero, NaN
 * included, is true), and the bitwise ops take integers only. */
#include <stdint.h>
#include <string.h>
#include "dsm_api.h"
#include "reduce.h"

#define LOOP(T, EXPR)                                           \
    do {                                                        \
        T *a = acc, x, y;                                       \
        const T *b = in;                                        \
        for (i = 0; i < count; i++) {                           \
            x = a[i];                                           \
            memcpy(&y, &b[i], sizeof y);                        \
            a[i] = (EXPR);                                      \
        }                                                       \
    } while (0)

#define ISNAN(v) ((v) != (v))
#define MINMAX(T)                                                                   \
    case DSM_OP_MIN: LOOP(T, ISNAN(x) || (!ISNAN(y) && x <= y) ? x : y); return 0;  \
    case DSM_OP_MAX: LOOP(T, ISNAN(x) || (!ISNAN(y) && x >= y) ? x : y); return 0;

#define LOGICAL(T)                                                                  \
    case DSM_OP_LAND: LOOP(T, (T)(x != 0 && y != 0)); return 0;                     \
    case DSM_OP_LOR: LOOP(T, (T)(x != 0 || y != 0)); return 0;                      \
    case DSM_OP_LXOR: LOOP(T, (T)((x != 0) != (y != 0))); return 0;

/* Floating point as it is. */
#define FLOAT_OPS(T)                                                                \
    switch (op) {                                                                   \
    case DSM_OP_SUM: LOOP(T, x + y); return 0;                                      \
    case DSM_OP_PROD: LOOP(T, x * y); return 0;                                     \
    MINMAX(T)                                                                       \
    LOGICAL(T)                                                                      \
    }                                                                               \
    return -1

/* Integers wrap around, as numpy's do: the arithmetic is done unsigned. */
#define INT_OPS(T)                                                                  \
    switch (op) {                                                                   \
    case DSM_OP_SUM: LOOP(T, (T)((uint64_t)x + (uint64_t)y)); return 0;            \
    case DSM_OP_PROD: LOOP(T, (T)((uint64_t)x * (uint64_t)y)); return 0;           \
    MINMAX(T)                                                                       \
    LOGICAL(T)                                                                      \
    case DSM_OP_BAND: LOOP(T, x & y); return 0;                                     \
    case DSM_OP_BOR: LOOP(T, x | y); return 0;                                      \
    case DSM_OP_BXOR: LOOP(T, x ^ y); return 0;                                     \
    }                                                                               \
    return -1

static const unsigned sizes[] = {
    [DSM_DT_F64] = 8, [DSM_DT_F32] = 4, [DSM_DT_I64] = 8, [DSM_DT_I32] = 4,
    [DSM_DT_I16] = 2, [DSM_DT_I8] = 1, [DSM_DT_U64] = 8, [DSM_DT_U32] = 4,
    [DSM_DT_U16] = 2, [DSM_DT_U8] = 1,
};

unsigned reduce_itemsize(int dtype)
{
    return dtype > 0 && dtype < (int)(sizeof sizes / sizeof sizes[0]) ? sizes[dtype] : 0;
}

int reduce_apply(int dtype, int op, void *acc, const void *in, uint64_t count)
{
    uint64_t i;
    switch (dtype) {
    case DSM_DT_F64: FLOAT_OPS(double);
    case DSM_DT_F32: FLOAT_OPS(float);
    case DSM_DT_I64: INT_OPS(int64_t);
    case DSM_DT_I32: INT_OPS(int32_t);
    case DSM_DT_I16: INT_OPS(int16_t);
    case DSM_DT_I8: INT_OPS(int8_t);
    case DSM_DT_U64: INT_OPS(uint64_t);
    case DSM_DT_U32: INT_OPS(uint32_t);
    case DSM_DT_U16: INT_OPS(uint16_t);
    case DSM_DT_U8: INT_OPS(uint8_t);
    }
    return -1;
}
