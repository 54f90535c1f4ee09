/* Layer 2: the operations, every blocking call of the API written once as
 * a resumable step function, after FoundationDB's actors: the runtime
 * (api.c) and the simulator (tests/sim) run the same steps, and only the
 * waiting between them differs.
 *
 * op_step runs with core.mu held and never blocks.  It returns
 *   OP_DONE    the operation is over;
 *   OP_ERROR   it failed: o->rc and o->err say why;
 *   OP_WAIT    it waits for a state change: the caller sleeps on the event
 *              count it read (core_seq) before the step, then steps again;
 *   OP_AGAIN   it got on, and may have dropped core.mu to do so (a send, an
 *              mprotect, a populate, a collective's begin): step again.
 * Every point where an operation drops core.mu (a send, an mprotect, a
 * populate, a collective's begin) ends its step with OP_AGAIN or OP_WAIT,
 * and the next step looks at the state afresh: whatever the rank's other
 * threads did meanwhile (the simulator runs them there) is seen.
 *
 * What differs between the consistency modes is one table, struct op_mode
 * (ops_mode.c), chosen once at ops_init; no mode flag is tested here. */
#ifndef DSM_OPS_H
#define DSM_OPS_H
#include "coherence.h"
#include "coll.h"
#include "locks.h"

enum op_status { OP_DONE, OP_ERROR, OP_WAIT, OP_AGAIN };

enum op_kind {
    OP_FAULT,           /* the access f.write (< 0: unknown) to page f.first */
    OP_COLL,            /* a collective (with the mode's prologue): call, out */
    OP_LOCK,            /* acquire `lock`: try (never queue) or deadline */
    OP_UNLOCK,          /* release `lock` */
    OP_PLACE,           /* move the homes of [first, first + n) to homes[] */
    OP_FETCH,           /* bring [first, first + n) here (write), pinning each (pin) */
    OP_UNPIN,           /* drop a pin of each page of f: [first, end) */
    OP_FINALIZE,        /* this rank's part of the job's end */
};

/* Pages [first, end) to bring here, in ascending order (OP_FETCH, and a
 * placement's runs): at is the next one not yet here (or pinned).  OP_FAULT:
 * page `first`, for writing or not. */
struct fetch {
    uint64_t first, end;
    int write, pin;
    int phase;
    uint64_t chunk, at;
    int claiming;                   /* counted in coh.claim_waits while it waits */
};

struct op {
    int kind, phase;
    int sub;                        /* the mode's part: its own phase */
    int cphase;                     /* a collective's phase */
    /* the arguments */
    struct coll_call call;          /* OP_COLL; OP_PLACE: the first barrier's sig */
    uint32_t lock;
    int try;                        /* OP_LOCK: answered at once, never queued */
    int bare;                       /* OP_COLL: without the mode's prologue */
    uint64_t first, n;              /* OP_PLACE */
    const uint16_t *homes;
    int verdict;                    /* OP_PLACE: the arguments' error (err filled), given
                                     * after the first barrier, so every rank gives it */
    struct fetch f;                 /* OP_FETCH; OP_PLACE's current run */
    uint64_t deadline;              /* now_ns; 0: none (the caller's sleep honours it) */
    char *err;                      /* DSM_ERRLEN bytes, filled on OP_ERROR */
    /* the partial results */
    int rc;                         /* OP_ERROR: the DSM_* code */
    uint32_t seq;                   /* OP_LOCK: our request */
    struct lock_value value;        /* OP_UNLOCK: what the lock carries on */
    void *out;                      /* OP_COLL: the result, malloc'd (the caller frees) */
    uint64_t out_len;
};

struct ops;

/* One consistency mode's part of the operations.  The step functions
 * return enum op_status, as op_step; DONE ends that part. */
struct op_mode {
    const char *name;
    int (*coll_prologue)(struct ops *x, struct op *o);  /* before any collective */
    int prologue_syncs;             /* ... and it is a barrier: a plain one needs no more */
    int (*after_acquire)(struct ops *x, struct op *o);  /* a lock was granted */
    int (*before_release)(struct ops *x, struct op *o); /* before a lock is given */
    const char *pin_refused;        /* why pins are refused, or NULL */
    int moves_homes;                /* a placement moves homes (else it is a barrier) */
};
extern const struct op_mode op_sequential, op_release;

/* The layer-2 state of one rank the operations run on. */
struct ops {
    struct core *c;
    struct transport *t;
    struct coh *h;
    struct coll *cl;
    struct locks *l;
    const struct op_mode *mode;
};

/* Start the protocols of one rank in order (coherence, pins, collectives,
 * locks), in core->release's mode, on a running transport: DSM_OK, or the
 * error with err filled (nothing left started).  dsm_start and the
 * simulator both start a rank this way. */
int ops_init(struct ops *x, struct core *c, struct transport *t, struct coh *h,
             struct coll *cl, struct locks *l, uint64_t twin_limit, uint32_t nlocks, char *err);
void ops_free(struct ops *x);

/* One step, caller holding core.mu. */
int op_step(struct ops *x, struct op *o);
/* The deadline passed while the op waited (caller holds core.mu): it gives
 * up, with o->rc and o->err filled. */
void op_timeout(struct ops *x, struct op *o);
/* How a waiting thread spins before it sleeps (core_spin): -1 not at all,
 * 0 yielding, 1 with the comm thread polling busily meanwhile. */
int op_spin(const struct op *o);
/* Free what an op still holds but its result (after DONE or ERROR). */
void op_end(struct op *o);

/* The op fails with DSM_* code rc (o->err filled already). */
static inline int op_fail(struct op *o, int rc)
{
    o->rc = rc;
    return OP_ERROR;
}

/* The op waits for a change, or fails with the job's failure. */
static inline int op_wait(struct ops *x, struct op *o)
{
    if (!core_failed(x->c))
        return OP_WAIT;
    dsm_err(o->err, "%s", x->c->failure);
    return op_fail(o, DSM_EPEER);
}
#endif
