/* Layer 0: the event trace behind `dsmexec --trace`.  A rank that turns
 * it on gets a fixed buffer of fixed-size records (struct dsm_event); any
 * thread appends one by taking the next slot with one atomic add, so the
 * faulting threads and the comm thread never wait for each other.  Past the
 * buffer's end events are counted as dropped.  Off (core.trace NULL) it
 * costs one branch per event site. */
#ifndef DSM_TRACE_H
#define DSM_TRACE_H
#include <stdint.h>
/* struct dsm_event is in dsm_api.h, which ground.h includes first. */

struct trace {
    struct dsm_event *ev;
    uint64_t cap;               /* records the buffer holds */
    uint64_t next;              /* slots taken (atomic); beyond cap: dropped */
};

/* A trace of cap records, or NULL (out of memory). */
struct trace *trace_new(uint64_t cap);
/* Append one record; any thread, no lock. */
void trace_add(struct trace *t, int kind, uint64_t arg, int peer, int write,
               uint64_t start_ns, uint64_t dur_ns);
/* Records kept so far, and (if dropped) how many did not fit. */
uint64_t trace_count(const struct trace *t, uint64_t *dropped);
#endif
