/* Layer 0: the event trace (trace.h): a buffer of fixed records that any
 * thread appends to with one atomic add.  It calls nothing above it. */
#include <stdint.h>
#include <stdlib.h>
#include "dsm_api.h"
#include "trace.h"

struct trace *trace_new(uint64_t cap)
{
    struct trace *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (!(t->ev = calloc(cap ? cap : 1, sizeof *t->ev))) {
        free(t);
        return NULL;
    }
    t->cap = cap;
    return t;
}

void trace_add(struct trace *t, int kind, uint64_t arg, int peer, int write,
               uint64_t start_ns, uint64_t dur_ns)
{
    uint64_t i = __atomic_fetch_add(&t->next, 1, __ATOMIC_RELAXED);
    struct dsm_event *e;
    if (i >= t->cap)
        return;                 /* full: trace_count reports it as dropped */
    e = &t->ev[i];
    e->start_ns = start_ns;
    e->dur_ns = dur_ns;
    e->arg = arg;
    e->kind = (uint16_t)kind;
    e->peer = (uint16_t)peer;
    e->write = (uint8_t)write;
}

uint64_t trace_count(const struct trace *t, uint64_t *dropped)
{
    uint64_t n = __atomic_load_n(&t->next, __ATOMIC_ACQUIRE);
    if (dropped)
        *dropped = n > t->cap ? n - t->cap : 0;
    return n < t->cap ? n : t->cap;
}
