/* Layer 2: the operations (ops.h), each a resumable step function:
 * collectives, lock acquire and release, placement, prefetch and pins,
 * finalize.  Phases are named for the state the op waits in. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "ops.h"

#define FETCH_CHUNK 1024        /* pages; two chunks at most in flight */

/* ---------------------------------------------------------- faults */

enum { FA_START, FA_WAITING };

/* A fault of a rank not running (finalize revoked every page, whatever
 * the page table says): its error. */
static int fault_refused(struct core *c, struct op *o)
{
    dsm_err(o->err, "page %llu touched %s", (unsigned long long)o->f.first,
            c->phase == PHASE_FINISHED ? "after finalize()" : "before init()");
    return op_fail(o, DSM_ESTATE);
}

/* The page fault's error: it leaves no waiter behind. */
static int fault_fails(struct core *c, struct op *o, int rc)
{
    c->pages[o->f.first].waiters--;
    return op_fail(o, rc);
}

/* coh_fault_step until the page allows the access.  Meanwhile the thread
 * counts among the page's waiters: one of them opens it when it comes.
 * An unknown access (write < 0) to a page readable already is a write. */
static int fault_step(struct ops *x, struct op *o)
{
    struct core *c = x->c;
    uint64_t page = o->f.first;
    if (o->phase == FA_START) {
        if (c->phase != PHASE_RUNNING)
            return fault_refused(c, o);
        if (o->f.write < 0)
            o->f.write = coh_satisfied(c, page, 0);
        c->pages[page].waiters++;
        o->phase = FA_WAITING;
    }
    for (;;) {
        if (coh_satisfied(c, page, o->f.write)) {
            c->pages[page].waiters--;
            return OP_DONE;
        }
        if (core_failed(c)) {
            dsm_err(o->err, "page %llu needed, but %s", (unsigned long long)page, c->failure);
            return fault_fails(c, o, DSM_EPEER);
        }
        if (c->phase != PHASE_RUNNING) {
            fault_refused(c, o);
            return fault_fails(c, o, DSM_ESTATE);
        }
        switch (coh_fault_step(x->h, page, o->f.write)) {
        case COH_DONE:
            continue;
        case COH_AGAIN:
            return OP_AGAIN;
        default:            /* a request is out, or the ring to our comm thread is full */
            return OP_WAIT;
        }
    }
}

/* ---------------------------------------------------------- collectives */

enum { C_PROLOGUE, C_BEGIN, C_ENDED };

/* A collective with the mode's prologue; DONE with o->out, o->out_len. */
static int collective(struct ops *x, struct op *o, const struct coll_call *call)
{
    int st;
    switch (o->cphase) {
    case C_PROLOGUE:
        if (!o->bare && (st = x->mode->coll_prologue(x, o)) != OP_DONE)
            return st;
        o->sub = 0;
        if (!o->bare && call->kind == DSM_COLL_BARRIER && !call->sig && x->mode->prologue_syncs)
            return OP_DONE;         /* the prologue was a barrier already */
        o->cphase = C_BEGIN;
        /* fall through */
    case C_BEGIN:
        if ((o->rc = coll_begin(x->cl, call, o->err)))
            return OP_ERROR;
        o->cphase = C_ENDED;
        return OP_AGAIN;            /* it may have sent its first message */
    default:
        if (!coll_ended(x->cl))
            return op_wait(x, o);
        o->cphase = C_PROLOGUE;
        return (o->rc = coll_result(x->cl, &o->out, &o->out_len, o->err)) ? OP_ERROR : OP_DONE;
    }
}

/* ---------------------------------------------------------- locks */

enum { L_ASK, L_ASKED, L_GRANTED };

static int lock_busy(struct op *o)
{
    dsm_err(o->err, "lock %u is held elsewhere: busy", o->lock);
    return op_fail(o, DSM_ETIMEDOUT);
}

/* Ask (or try), wait for our own request's grant, then the mode's part. */
static int lock_step(struct ops *x, struct op *o)
{
    int rc;
    switch (o->phase) {
    case L_ASK:
        rc = o->try ? locks_try(x->l, o->lock, o->err) : locks_ask(x->l, o->lock, o->err);
        if (rc == TP_FULL && o->try && x->l->mine[o->lock].state != LOCK_FREE)
            return lock_busy(o);
        if (rc == TP_FULL)          /* the ring is full, or another thread of ours asks */
            return op_wait(x, o);
        if (rc)
            return op_fail(o, rc);
        o->seq = locks_seq(x->l, o->lock);
        o->phase = L_ASKED;
        return OP_AGAIN;
    case L_ASKED:
        if (o->try && !locks_held_by(x->l, o->lock, o->seq) && locks_busy(x->l, o->lock, o->seq))
            return lock_busy(o);
        if (!locks_held_by(x->l, o->lock, o->seq))
            return op_wait(x, o);
        o->phase = L_GRANTED;
        o->deadline = 0;            /* granted: the rest has no time limit */
        o->sub = 0;
        /* fall through */
    default:
        return x->mode->after_acquire(x, o);
    }
}

enum { U_RUNNING, U_MODE, U_GIVE };

/* The mode's part (release mode: our writes home, our notices into
 * o->value), then the lock goes on with o->value. */
static int unlock_step(struct ops *x, struct op *o)
{
    struct lock_value copy;
    int st;
    switch (o->phase) {
    case U_RUNNING:
        if ((o->rc = core_running(x->c, o->err)))
            return OP_ERROR;
        o->phase = U_MODE;
        o->sub = 0;
        /* fall through */
    case U_MODE:
        if ((st = x->mode->before_release(x, o)) != OP_DONE)
            return st;
        o->phase = U_GIVE;
        /* fall through */
    default:                /* locks_give takes the value over, even when it answers TP_FULL */
        copy.len = o->value.len;
        copy.data = copy.len ? malloc(copy.len) : NULL;
        if (copy.data)
            memcpy(copy.data, o->value.data, copy.len);
        st = locks_give(x->l, o->lock, copy, o->err);
        if (st == TP_FULL)
            return op_wait(x, o);
        return st ? op_fail(o, st) : OP_DONE;
    }
}

/* ---------------------------------------------------------- fetching pages */

enum { F_START, F_ASK_FIRST, F_AHEAD, F_ASK_AHEAD, F_PAGES };

/* Populate pages [first, first + n) with core.mu dropped. */
static void populate(struct core *c, uint64_t first, uint64_t n)
{
    core_unlock(c);
    c->mem.populate(c->mem.ctx, first, n);
    core_lock(c);
}

static uint64_t chunk_len(const struct fetch *f, uint64_t from)
{
    return f->end - from < FETCH_CHUNK ? f->end - from : FETCH_CHUNK;
}

/* Ask for every page of [first, first + n) that needs it.  A full ring
 * leaves pages unasked: the page loop asks for them again. */
static void request_range(struct ops *x, uint64_t first, uint64_t n, int write)
{
    uint64_t p;
    for (p = first; p < first + n && !core_failed(x->c); p++)
        if (!coh_satisfied(x->c, p, write) && !x->c->pages[p].pending &&
            !x->c->pages[p].leaving && !coh_open_closed(x->h, p))
            coh_request(x->h, p, first + n - p, write);
}

/* The bulk form of a fault, with no signal per page: each chunk's memory
 * and requests go out before the pages of the chunk before it are waited
 * for, so at most two chunks are in flight. */
static int fetch(struct ops *x, struct op *o, struct fetch *f)
{
    struct core *c = x->c;
    /* a host's other ranks ask their leader for the access itself: in
     * release mode it opens a write for the host (coh_host.c) */
    int ask = coh_host_local(c) ? f->write : x->h->proto->asks_write(f->write), step;
    uint64_t stop, p;
    if (f->claiming) {              /* back from waiting for a page served away */
        x->h->claim_waits--;
        f->claiming = 0;
    }
    if (core_failed(c))
        return op_wait(x, o);
    switch (f->phase) {
    case F_START:
        f->chunk = f->at = f->first;
        populate(c, f->first, chunk_len(f, f->first));
        f->phase = F_ASK_FIRST;
        return OP_AGAIN;
    case F_ASK_FIRST:
        request_range(x, f->first, chunk_len(f, f->first), ask);
        f->phase = F_AHEAD;
        return OP_AGAIN;
    case F_AHEAD:                   /* the next chunk: memory first, then the requests */
        stop = f->chunk + chunk_len(f, f->chunk);
        f->phase = stop < f->end ? F_ASK_AHEAD : F_PAGES;
        if (stop < f->end)
            populate(c, stop, chunk_len(f, stop));
        return OP_AGAIN;
    case F_ASK_AHEAD:
        stop = f->chunk + chunk_len(f, f->chunk);
        request_range(x, stop, chunk_len(f, stop), ask);
        f->phase = F_PAGES;
        return OP_AGAIN;
    }
    for (stop = f->chunk + chunk_len(f, f->chunk); (p = f->at) < stop; f->at++) {
        if (coh_open_closed(x->h, p))
            return OP_AGAIN;
        if (f->pin ? coh_pin_page(x->h, p, f->write) : coh_satisfied(c, p, f->write))
            continue;
        if (c->pages[p].leaving) {  /* being served away (so it cannot be pinned): */
            x->h->claim_waits++;    /* coh_unclaim wakes us once it is gone */
            f->claiming = 1;
            return op_wait(x, o);
        }
        if ((step = x->h->proto->open_here(x->h, p, f->write)) == COH_WAIT)
            return op_wait(x, o);   /* the host lowers the page (release mode), or failed */
        if (step != COH_ASK)
            return OP_AGAIN;        /* opened with no message (release: a twin), or look again */
        if (c->pages[p].pending)
            return op_wait(x, o);
        return coh_request(x->h, p, stop - p, ask) & TP_DROPPED ? OP_AGAIN : op_wait(x, o);
    }
    f->chunk = stop;
    f->phase = F_AHEAD;
    return stop < f->end ? OP_AGAIN : OP_DONE;
}

/* Drop the pins; if messages were parked for those pages, DSM_UNPIN to our
 * comm thread runs them again. */
static int unpin_step(struct ops *x, struct op *o)
{
    if (o->phase == 0 && !coh_unpin(x->h, o->f.first, o->f.end - o->f.first))
        return OP_DONE;
    o->phase = 1;
    return coh_unpin_poke(x->h) == TP_FULL ? op_wait(x, o) : OP_DONE;
}

/* ---------------------------------------------------------- placement */

enum { P_SETTLED, P_FIRST, P_TAKE, P_POST, P_SWITCHED, P_SECOND };

/* The run of pages from `page` on that this rank is to home. */
static uint64_t my_run(const struct ops *x, const struct op *o, uint64_t page)
{
    uint64_t k = page;
    while (k < o->first + o->n && o->homes[k - o->first] == x->c->rank)
        k++;
    return k - page;
}

/* coherence.h's placement steps between two barriers: the first also
 * checks that every rank asked for the same placement, and the second
 * keeps every rank from asking a new home before it knows it is one. */
static int place_step(struct ops *x, struct op *o)
{
    uint64_t p;
    int st;
    switch (o->phase) {
    case P_SETTLED:                 /* no read-ahead of ours still coming */
        if (x->mode->moves_homes && !o->verdict && !coh_place_settled(x->h, o->first, o->n))
            return op_wait(x, o);
        o->phase = P_FIRST;
        /* fall through */
    case P_FIRST:
        if ((st = collective(x, o, &o->call)) != OP_DONE)
            return st;
        free(o->out);
        o->out = NULL;
        if (o->verdict)             /* the same verdict on every rank */
            return op_fail(o, o->verdict);
        if (!x->mode->moves_homes)
            return OP_DONE;
        if (coh_place_begin(x->h, o->first, o->n, o->homes))
            return op_fail(o, dsm_err_sys(o->err, ENOMEM, "placement of %llu pages",
                                          (unsigned long long)o->n));
        o->f = (struct fetch){ .first = o->first, .end = o->first, .write = 1 };
        o->phase = P_TAKE;
        return OP_AGAIN;
    case P_TAKE:                    /* our pages, a run at a time */
        if (o->f.first == o->f.end) {
            p = coh_place_next(x->h, o->f.end);
            if (p < o->first + o->n)
                o->f = (struct fetch){ .first = p, .end = p + my_run(x, o, p), .write = 1 };
        }
        if (o->f.first < o->f.end) {
            if ((st = fetch(x, o, &o->f)) == OP_DONE)
                o->f.first = o->f.end;
            return st == OP_DONE ? OP_AGAIN : st;
        }
        o->phase = P_POST;
        /* fall through */
    case P_POST:
        if (coh_place_post(x->h) == TP_FULL)
            return op_wait(x, o);
        o->phase = P_SWITCHED;
        return OP_AGAIN;
    case P_SWITCHED:
        if (!coh_place_done(x->h))
            return op_wait(x, o);
        coh_place_end(x->h);
        o->call = (struct coll_call){ .kind = DSM_COLL_BARRIER };
        o->phase = P_SECOND;
        /* fall through */
    default:
        return collective(x, o, &o->call);
    }
}

/* ---------------------------------------------------------- finalize */

enum { Z_SETTLED, Z_SEND, Z_FINISHED };

/* DSM_FINALIZE goes to our own comm thread, which tells every peer and
 * finishes the core once all have said it and the connections are
 * drained.  Settled first: a page that came after DSM_FINALIZE would be
 * confirmed to its home (DSM_UPDATE) over a connection already shut. */
static int finalize_step(struct ops *x, struct op *o)
{
    struct msg m = { .type = DSM_FINALIZE, .origin = (uint16_t)x->c->rank };
    switch (o->phase) {
    case Z_SETTLED:
        if ((o->rc = core_running(x->c, o->err)))
            return OP_ERROR;
        if (!coh_place_settled(x->h, 0, x->c->npages))
            return op_wait(x, o);
        o->phase = Z_SEND;
        /* fall through */
    case Z_SEND:
        m.coll.epoch = coll_count(x->cl);
        if (tp_send_app(x->t, x->c->rank, &m, NULL) == TP_FULL)
            return op_wait(x, o);
        o->phase = Z_FINISHED;
        return OP_AGAIN;
    default:
        return x->c->phase == PHASE_FINISHED ? OP_DONE : op_wait(x, o);
    }
}

/* ---------------------------------------------------------- the driver */

int op_step(struct ops *x, struct op *o)
{
    int st = OP_ERROR;
    switch (o->kind) {
    case OP_FAULT:
        return fault_step(x, o);
    case OP_COLL:
        return collective(x, o, &o->call);
    case OP_LOCK:
        return lock_step(x, o);
    case OP_UNLOCK:
        return unlock_step(x, o);
    case OP_PLACE:
        st = place_step(x, o);
        if (st == OP_ERROR && o->phase > P_FIRST && o->phase < P_SECOND)
            coh_place_end(x->h);
        return st;
    case OP_FETCH:
        return fetch(x, o, &o->f);
    case OP_UNPIN:
        return unpin_step(x, o);
    case OP_FINALIZE:
        return finalize_step(x, o);
    }
    dsm_err(o->err, "operation %d is not one of ops.h's", o->kind);
    return op_fail(o, DSM_EINVAL);
}

void op_timeout(struct ops *x, struct op *o)
{
    if (o->kind == OP_LOCK) {
        if (o->phase == L_ASKED)    /* our request, not another thread's */
            locks_abandon(x->l, o->lock);
        dsm_err(o->err, "lock %u is held elsewhere: timed out", o->lock);
    } else {
        if (o->f.claiming)
            x->h->claim_waits--;
        o->f.claiming = 0;
        dsm_err(o->err, "page %llu did not come within the timeout: another rank holds it "
                "pinned", (unsigned long long)o->f.at);
    }
    o->rc = DSM_ETIMEDOUT;
}

int op_spin(const struct op *o)
{
    if (o->kind == OP_FETCH || (o->kind == OP_LOCK && (o->try || o->deadline)))
        return -1;
    return o->kind == OP_COLL || o->kind == OP_LOCK || o->kind == OP_PLACE;
}

void op_end(struct op *o)
{
    free(o->value.data);
    o->value = (struct lock_value){ NULL, 0 };
}

/* ---------------------------------------------------------- life cycle */

int ops_init(struct ops *x, struct core *c, struct transport *t, struct coh *h,
             struct coll *cl, struct locks *l, uint64_t twin_limit, uint32_t nlocks, char *err)
{
    int rc;
    *x = (struct ops){ c, t, h, cl, l, c->release ? &op_release : &op_sequential };
    if ((rc = coh_init(h, c, t, twin_limit, err)))
        return rc;
    coh_pin_init(h);
    if ((rc = coll_init(cl, c, t, err)))
        goto err_coh;
    if (!(rc = locks_init(l, c, t, nlocks, err)))
        return DSM_OK;
    coll_free(cl);
err_coh:
    coh_pin_free(h);
    coh_free(h);
    return rc;
}

void ops_free(struct ops *x)
{
    locks_free(x->l);
    coll_free(x->cl);
    coh_pin_free(x->h);
    coh_free(x->h);
}
