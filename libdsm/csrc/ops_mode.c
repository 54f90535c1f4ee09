/* Layer 2: what the operations do differently in each consistency mode
 * (ops.h's struct op_mode), chosen once at ops_init.
 *
 * Sequential consistency needs nothing around synchronisation: every
 * access already faults its way to the current copy.  Release consistency
 * (coh_rc.c) makes synchronisation carry the memory:
 *   - every collective is also a barrier of the memory: each rank sends
 *     its writes home, the ranks gather their write notices, and each
 *     drops the copies others wrote;
 *   - a lock's release sends the holder's writes home and hands its write
 *     notices on with the lock; an acquire drops the copies they name;
 *   - pins are refused, and a placement moves no home: homes follow
 *     single writers at barriers already. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include "ops.h"

static int nothing(struct ops *x, struct op *o)
{
    (void)x, (void)o;
    return OP_DONE;
}

const struct op_mode op_sequential = {
    .name = "sequential",
    .coll_prologue = nothing,
    .after_acquire = nothing,
    .before_release = nothing,
    .pin_refused = NULL,
    .moves_homes = 1,
};

/* Drop the copies the notices named, each once it is here; with host
 * sharing the leader drops the host's, asked at sub `begin`. */
static int drop_noticed(struct ops *x, struct op *o, int begin)
{
    if (o->sub == begin) {
        if (rc_drop_begin(x->h) == TP_FULL)
            return op_wait(x, o);
        o->sub = begin + 1;
    }
    return rc_drop_step(x->h) ? OP_DONE : op_wait(x, o);
}

/* Send every write since the last release home (sub 0), and wait until
 * every home applied it (sub 1): for a barrier or not. */
static int flush(struct ops *x, struct op *o, int barrier)
{
    if (o->sub == 0) {
        if (rc_flush(x->h, barrier) == TP_FULL)
            return op_wait(x, o);
        o->sub = 1;
        return OP_AGAIN;
    }
    return rc_flushed(x->h) ? OP_DONE : op_wait(x, o);
}

enum { MB_FLUSH, MB_FLUSHED, MB_GATHERED, MB_DROP };

/* A gather of the notices, carrying the identity of the call it comes
 * before (o->call): a plain barrier ends with it, so a rank that called
 * barrier() while another called something else must fail here. */
static int memory_barrier(struct ops *x, struct op *o)
{
    struct coll_call call = { .kind = DSM_COLL_GATHER, .root = DSM_ROOT_ALL,
                              .before = &o->call };
    unsigned char *notices;
    void *all;
    uint64_t len;
    int st;
    switch (o->sub) {
    case MB_FLUSH:
    case MB_FLUSHED:
        if ((st = flush(x, o, 1)) != OP_DONE)
            return st;
        if (!rc_host_arrived(x->h))
            return op_wait(x, o);   /* a host's notices are complete once all flushed */
        if (rc_notices(x->h, 0, &notices, &len))
            return op_fail(o, dsm_err_sys(o->err, ENOMEM, "write notices"));
        call.data = notices;
        call.len = len;
        st = coll_begin(x->cl, &call, o->err);
        free(notices);
        if (st)
            return op_fail(o, st);
        o->sub = MB_GATHERED;
        return OP_AGAIN;
    case MB_GATHERED:
        if (!coll_ended(x->cl))
            return op_wait(x, o);
        if ((st = coll_result(x->cl, &all, &len, o->err)))
            return op_fail(o, st);
        rc_barrier(x->h, all, len);
        free(all);
        o->sub = MB_DROP;
        /* fall through */
    default:
        return drop_noticed(x, o, MB_DROP);
    }
}

/* The notices the lock brought take effect (sub 0), then the copies they
 * name go. */
static int lock_notices(struct ops *x, struct op *o)
{
    struct lock_value v;
    if (o->sub == 0) {
        v = locks_value(x->l, o->lock);
        rc_acquire(x->h, v.data, v.len);
        o->sub = 1;
        return OP_AGAIN;
    }
    return drop_noticed(x, o, 1);
}

/* Our writes home, then our notices into o->value for the next holder. */
static int release_writes(struct ops *x, struct op *o)
{
    uint64_t len;
    int st;
    if ((st = flush(x, o, 0)) != OP_DONE)
        return st;
    if (rc_notices(x->h, 1, &o->value.data, &len))
        return op_fail(o, dsm_err_sys(o->err, ENOMEM, "write notices"));
    o->value.len = (uint32_t)len;
    return OP_DONE;
}

const struct op_mode op_release = {
    .name = "release",
    .coll_prologue = memory_barrier,
    .prologue_syncs = 1,
    .after_acquire = lock_notices,
    .before_release = release_writes,
    .pin_refused = "pinning is for sequential consistency; in release mode copy the data "
                   "out (bytes(), tobytes()) between synchronisations",
    .moves_homes = 0,
};
