/* The simulated application: the scenario a seed makes (the same
 * collectives on every rank, random memory operations and lock-protected
 * increments around them), and one step of a thread at a time, driving the
 * protocols' non-blocking steps as the real blocking calls do. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"

/* ---------------------------------------------------------- the scenario */

/* Who may write word w of page p between collectives ph and ph + 1 in
 * release mode: a rank, or nobody (the value n).  Others reading it race. */
static int owner(uint32_t p, uint32_t w, int ph)
{
    return (int)((p * 7 + w * 3 + (uint32_t)ph) % (uint32_t)(W.s.n + 1));
}

/* A random operation for thread t of rank r between collectives ph and
 * ph + 1. */
static void random_op(struct op *o, int r, int t, int ph)
{
    uint64_t k = below(100);
    uint32_t w, mine[SIM_WORDS], n = 0;
    *o = (struct op){ .kind = k < 40 ? OP_READ : k < 80 ? OP_WRITE : k < 92 ? OP_LOCK_INC : OP_PIN,
                      .page = (uint32_t)below(W.npages),
                      .word = (uint32_t)below(DATA_WORDS),
                      .lock = (uint32_t)below(W.nlocks), .phase = ph };
    o->count = 1 + (uint32_t)below(W.npages - o->page);
    o->write = (uint32_t)below(2);
    if (W.release && o->kind == OP_PIN)
        o->kind = OP_READ;          /* pins are for sequential mode */
    if (!W.release || o->kind != OP_WRITE)
        return;
    for (w = 0; t == 0 && w < DATA_WORDS; w++)      /* data-race-free: only its own words */
        if (owner(o->page, w, ph) == r)
            mine[n++] = w;
    if (n)
        o->word = mine[below(n)];
    else
        o->kind = OP_READ;
}

/* Threads get random reads and writes (words 0..5: words 6 and 7 hold
 * the locks' counters) and lock-protected increments; thread
 * 0 of every rank makes the same collectives between them (barrier, bcast,
 * allreduce, reduce, allgather, and in sequential mode placements of a
 * random range of pages at random homes), and finalize at the end.  A
 * placement, like every collective in release mode, synchronises the
 * whole rank (see phase_open).  In release mode
 * a last barrier comes before finalize, the writes are data-race-free (a
 * word has one writer between two collectives, and only thread 0 writes
 * outside locks), and a collective synchronises the whole rank: thread 0
 * calls it once thread 1 is done with the ops before it, and thread 1 goes
 * on after it returned. */
void make_scenario(void)
{
    static const int kinds[] = { DSM_COLL_BARRIER, DSM_COLL_BCAST, DSM_COLL_REDUCE,
                                 DSM_COLL_REDUCE, DSM_COLL_GATHER };
    int phases = (int)below(MAX_COLLS + 1), colls = phases + W.release, r, t, p, i;
    W.npages = 1 + below(6);
    W.nlocks = 1 + (uint32_t)below(MAX_LOCKS);
    W.nthreads = 1 + (int)below(SIM_MAX_THREADS);
    for (p = 0; p < colls; p++) {
        struct coll_spec *c = &W.colls[p];
        i = p < phases ? (int)below(W.release ? 5 : 6) : 0;
        c->kind = i == 5 ? COLL_PLACE : kinds[i];
        c->root = i == 2 || i == 4 ? DSM_ROOT_ALL : (int)below((uint64_t)W.s.n);
        c->op = i == 3 ? DSM_OP_MAX : DSM_OP_SUM;
        if (c->kind == COLL_PLACE) {
            c->first = (uint32_t)below(W.npages);
            c->n = 1 + (uint32_t)below(W.npages - c->first);
            for (i = 0; i < (int)c->n; i++)
                c->homes[i] = (uint16_t)below((uint64_t)W.s.n);
        }
    }
    for (r = 0; r < W.s.n; r++)
        for (t = 0; t < W.nthreads; t++) {
            struct thread *th = &W.th[r][t];
            memset(th, 0, sizeof *th);
            for (p = 0; p <= phases; p++) {
                int n = (int)below(12);
                for (i = 0; i < n && th->nops < MAX_OPS - MAX_COLLS - 3; i++)
                    random_op(&th->ops[th->nops++], r, t, p);
                if (t == 0 && p < colls)
                    th->ops[th->nops++] = (struct op){ .kind = OP_COLL, .coll = (uint32_t)p };
            }
            if (t == 0)
                th->ops[th->nops++].kind = OP_FINALIZE;
        }
}

/* Rank r's contribution to collective `idx`: two 64-bit numbers. */
static void contribution(int r, uint32_t idx, int64_t out[2])
{
    out[0] = r + 1;
    out[1] = (int64_t)(r + 1) * (idx + 3) - 5;
}

/* What rank r must get from collective idx (or not get). */
static void check_coll(int r, uint32_t idx, const void *out, uint64_t len)
{
    const struct coll_spec *c = &W.colls[idx];
    int gets = c->kind == DSM_COLL_BCAST ? r != c->root
             : c->kind != DSM_COLL_BARRIER && c->kind != COLL_PLACE &&
               (c->root == DSM_ROOT_ALL || c->root == r);
    int64_t want[2] = { 0, 0 }, v[2];
    int q;
    for (q = 0; q < W.s.n; q++)
        if (!W.s.r[q].dead && W.began[q] <= (int)idx)
            sim_violation(&W.s, "rank %d left collective %u before rank %d began it", r, idx, q);
    if (gets != (out != NULL)) {
        sim_violation(&W.s, "rank %d %s a result of collective %u", r, gets ? "lacks" : "got",
                      idx);
        return;
    }
    if (!out)
        return;
    if (c->kind == DSM_COLL_GATHER) {
        for (q = 0; q < W.s.n; q++) {
            const unsigned char *e = (const unsigned char *)out + q * 24;
            uint32_t tag[2];
            memcpy(tag, e, 8);
            contribution((int)tag[0], idx, want);
            if (len != (uint64_t)W.s.n * 24 || tag[1] != 16 || memcmp(e + 8, want, 16))
                sim_violation(&W.s, "rank %d: allgather %u entry %d is wrong", r, idx, q);
        }
        return;
    }
    for (q = 0; q < W.s.n; q++) {
        contribution(q, idx, v);
        if (c->kind == DSM_COLL_BCAST && q == c->root)
            memcpy(want, v, sizeof v);
        else if (c->kind == DSM_COLL_REDUCE && c->op == DSM_OP_SUM)
            want[0] += v[0], want[1] += v[1];
        else if (c->kind == DSM_COLL_REDUCE)
            want[0] = v[0] > want[0] ? v[0] : want[0], want[1] = v[1] > want[1] ? v[1] : want[1];
    }
    if (len != 16 || memcmp(out, want, 16))
        sim_violation(&W.s, "rank %d: collective %u gave a wrong result", r, idx);
}

/* The counter of lock k, one word per lock: word 7 (or 6) of a page. */
static uint32_t counter_page(uint32_t lock)
{
    return lock % (uint32_t)W.npages;
}

static uint32_t counter_word(uint32_t lock)
{
    return SIM_WORDS - 1 - lock / (uint32_t)W.npages;
}

/* ---------------------------------------------------------- application steps */

int thread_done(const struct thread *th)
{
    return th->ended || th->pc == th->nops;
}

/* Threads `from` and up of rank r stopped: they failed, or finished. */
static int threads_done(int r, int from)
{
    int t;
    for (t = from; t < W.nthreads; t++)
        if (!thread_done(&W.th[r][t]))
            return 0;
    return 1;
}

static int all_finalized(const struct srank *r)
{
    int p;
    if (!r->self_finalized)
        return 0;
    for (p = 0; p < W.s.n; p++)
        if (p != r->id && !r->peer_finalized[p])
            return 0;
    return 1;
}

static int ring_room(struct srank *r)
{
    return r->tp.ring.len < DSM_RING_CAP;
}

/* Release mode: may rc_drop_step get on (a copy to drop is here)? */
static int drop_ready(struct srank *sr)
{
    uint64_t p;
    for (p = 0; p < W.npages; p++)
        if (sr->coh.rc.drop.bits[p / 64] >> (p % 64) & 1 && !sr->core.pages[p].pending)
            return 1;
    return !sr->coh.rc.drop.count;
}

/* Is collective k a point where the whole rank synchronises: every one
 * in release mode, a placement in sequential mode? */
static int rank_wide(uint32_t k)
{
    return W.release || W.colls[k].kind == COLL_PLACE;
}

/* A collective that synchronises the whole rank: thread 0 begins
 * collective k once thread 1 is past the ops before it; thread 1 begins
 * its ops after collective k once thread 0 has ended it. */
static int phase_open(int r, int t, const struct op *o)
{
    const struct thread *other = &W.th[r][1 - t];
    int k;
    if (W.nthreads < 2 || (t == 0 && (o->kind != OP_COLL || o->coll >= MAX_COLLS + 1)))
        return 1;
    if (t == 0)
        return !rank_wide(o->coll) || thread_done(other) ||
               other->ops[other->pc].phase > (int)o->coll;
    for (k = o->phase - 1; k >= 0 && !rank_wide((uint32_t)k); k--)
        ;
    return k < other->colls_done;
}

/* OP_PIN, as dsm_pin: phase 0 fetches the pages in ascending order and
 * pins each as soon as it is here; phase 1 holds them all (reads, or
 * writes, each page); phase 2 unpins and posts DSM_UNPIN.  Ready in phase 0
 * when the next page can be asked for or has come. */
static int pin_ready(struct srank *sr, const struct thread *th, const struct op *o)
{
    return th->phase || coh_fault_ready(&sr->coh, o->page + th->upto, (int)o->write);
}

/* A placement (COLL_PLACE), as dsm_place: phase 0 waits for our requests
 * for the range to be answered, then begins the first barrier; 1 ends it
 * and begins the placement; 2 takes the pages this rank is to home for
 * writing, one fault at a time; 3 posts DSM_PLACE; 4 waits for the switch
 * and begins the second barrier; 5 ends it. */
static int place_ready(struct srank *sr, const struct thread *th, const struct op *o)
{
    const struct coll_spec *c = &W.colls[o->coll];
    uint64_t p;
    switch (th->phase) {
    case 0: return coh_place_settled(&sr->coh, c->first, c->n);
    case 1: case 5: return coll_ended(&sr->coll);
    case 2:
        p = coh_place_next(&sr->coh, th->upto);
        return p == c->first + c->n || coh_fault_ready(&sr->coh, p, 1);
    case 4: return coh_place_done(&sr->coh);
    }
    return 1;
}

/* Can this thread's next step change something? */
int thread_ready(int r, int t)
{
    struct thread *th = &W.th[r][t];
    struct srank *sr = &W.s.r[r];
    const struct op *o = &th->ops[th->pc];
    if (sr->dead || thread_done(th))
        return 0;
    if (core_failed(&sr->core))
        return 1;               /* it wakes to the failure */
    if (th->asleep && core_seq(&sr->core) == th->seq)
        return 0;               /* nobody woke it */
    if (th->full && !ring_room(sr))
        return 0;
    if (!phase_open(r, t, o))
        return 0;
    switch (o->kind) {
    case OP_READ:
    case OP_WRITE:
        return coh_fault_ready(&sr->coh, o->page, o->kind == OP_WRITE);
    case OP_LOCK_INC:
        switch (th->phase) {
        case 0: return sr->locks.mine[o->lock].state == LOCK_FREE;
        case 1: return locks_held(&sr->locks, o->lock);
        case 2: return drop_ready(sr);
        case 3: return coh_fault_ready(&sr->coh, counter_page(o->lock), 1);
        case 4: return !th->flushing || rc_flushed(&sr->coh);
        }
        return 1;
    case OP_COLL:
        if (W.colls[o->coll].kind == COLL_PLACE)
            return place_ready(sr, th, o);
        switch (th->phase) {
        case 0: return !th->flushing || rc_flushed(&sr->coh);
        case 2: case 5: return coll_ended(&sr->coll);
        case 3: return drop_ready(sr);
        }
        return 1;
    case OP_PIN:
        return pin_ready(sr, th, o);
    case OP_FINALIZE:
        return th->phase == 0 ? threads_done(r, 1) : all_finalized(sr);
    }
    return 0;
}

/* A fault step; 1 once the access may be made.  Caller holds core.mu. */
static int fault(int r, struct thread *th, uint32_t page, int write)
{
    struct srank *sr = &W.s.r[r];
    int tries = 0;
    enum coh_step st;
    while ((st = coh_fault_step(&sr->coh, page, write)) == COH_AGAIN)
        if (++tries > 100)
            sim_violation(&W.s, "rank %d: a fault on page %u keeps asking again", r, page);
    th->full = st == COH_FULL;
    if (th->waits_on && (st == COH_DONE || th->waits_on != page + 1)) {
        sr->core.pages[th->waits_on - 1].waiters--;
        th->waits_on = 0;
    }
    if (st != COH_DONE && !th->waits_on) {  /* as coh_fault: the page opens in this thread */
        sr->core.pages[page].waiters++;
        th->waits_on = page + 1;
    }
    return st == COH_DONE;
}

/* A read: the last write, or in release mode, for a word another rank may
 * be writing now (a race), some value written to that word before now. */
static void check_read(int r, const struct op *o, uint32_t page, uint32_t word)
{
    uint64_t got = *word_at(W.s.r[r].core.rw, page, word);
    uint64_t want = *word_at(W.shadow, page, word);
    int who = o && W.release ? owner(page, word, o->phase) : r;
    if (who != r && who != W.s.n) {
        if (got && (got > W.writes || W.hist[got] != page * SIM_WORDS + word))
            sim_violation(&W.s, "rank %d read page %u word %u = %llu in a race: a value never "
                          "written there before", r, page, word, (unsigned long long)got);
        return;
    }
    if (got != want)
        sim_violation(&W.s, "rank %d read page %u word %u = %llu, but the last write was %llu",
                      r, page, word, (unsigned long long)got, (unsigned long long)want);
}

static void do_write(int r, uint32_t page, uint32_t word, uint64_t value)
{
    *word_at(W.s.r[r].core.rw, page, word) = value;
    *word_at(W.shadow, page, word) = value;
    if (word < DATA_WORDS)
        W.hist[value] = page * SIM_WORDS + word;
}

/* Release mode: send our writes home (a release).  0 once they are there. */
static int release_step(struct srank *sr, struct thread *th, int next)
{
    if (!th->flushing) {
        rc_flush(&sr->coh);
        th->flushing = 1;
    }
    if (!rc_flushed(&sr->coh))
        return -1;
    th->flushing = 0;
    th->phase = next;
    return 0;
}

/* Phases: 0 ask, 1 granted (release mode: apply the notices), 2 drop the
 * copies noticed, 3 the increment, 4 release mode: writes home, 5 give. */
static void lock_inc(int r, struct thread *th, const struct op *o)
{
    struct srank *sr = &W.s.r[r];
    struct lock_value v = { NULL, 0 };
    char err[DSM_ERRLEN];
    uint32_t cp = counter_page(o->lock);
    uint64_t len;
    int rc;
    if (th->phase == 0) {
        if ((rc = locks_ask(&sr->locks, o->lock, err)) == 0)
            th->phase = 1;
        else if (rc != TP_FULL)
            sim_violation(&W.s, "rank %d: lock %u: %s", r, o->lock, err);
        th->full = rc == TP_FULL && sr->locks.mine[o->lock].state == LOCK_FREE;
    } else if (th->phase == 1) {
        v = locks_value(&sr->locks, o->lock);
        if (W.release)
            rc_acquire(&sr->coh, v.data, v.len);
        th->phase = W.release ? 2 : 3;
    } else if (th->phase == 2) {
        if (rc_drop_step(&sr->coh))
            th->phase = 3;
    } else if (th->phase == 3) {
        if (fault(r, th, cp, 1)) {
            check_read(r, NULL, cp, counter_word(o->lock));
            do_write(r, cp, counter_word(o->lock),
                     *word_at(W.shadow, cp, counter_word(o->lock)) + 1);
            th->phase = W.release ? 4 : 5;
        }
    } else if (th->phase == 4) {
        release_step(sr, th, 5);
    } else {
        if (W.release && rc_notices(&sr->coh, 1, &v.data, &len) == 0)
            v.len = (uint32_t)len;
        if ((rc = locks_give(&sr->locks, o->lock, v, err)) == 0) {
            th->phase = 0;
            th->pc++;
        }
        th->full = rc == TP_FULL;
        if (rc && rc != TP_FULL)
            sim_violation(&W.s, "rank %d: release lock %u: %s", r, o->lock, err);
    }
}

static void collective_step(int r, struct thread *th, const struct op *o)
{
    struct srank *sr = &W.s.r[r];
    struct msg fin = { .type = DSM_FINALIZE, .origin = (uint16_t)r,
                       .coll = { .epoch = coll_count(&sr->coll) } };
    char err[DSM_ERRLEN];
    int rc;
    if (o->kind == OP_FINALIZE) {
        if (th->phase == 0) {
            th->full = tp_send_app(&sr->tp, r, &fin, NULL) == TP_FULL;
            th->phase = !th->full;
        } else {
            th->pc++;
        }
        return;
    }
    if (th->phase == 0) {           /* phases 0-3: release mode's memory barrier */
        if (!W.release)
            th->phase = 4;
        else
            release_step(sr, th, 1);
    } else if (th->phase == 1) {
        unsigned char *notices;
        uint64_t len;
        struct coll_call call = { .kind = DSM_COLL_GATHER, .root = DSM_ROOT_ALL };
        if (rc_notices(&sr->coh, 0, &notices, &len))
            sim_violation(&W.s, "rank %d: no memory for notices", r);
        call.data = notices;
        call.len = len;
        if (coll_begin(&sr->coll, &call, err))
            sim_violation(&W.s, "rank %d: notices of collective %u: %s", r, o->coll, err);
        W.began[r]++;
        free(notices);
        th->phase = 2;
    } else if (th->phase == 2) {
        void *all;
        uint64_t len;
        if (coll_result(&sr->coll, &all, &len, err))
            sim_violation(&W.s, "rank %d: notices of collective %u: %s", r, o->coll, err);
        rc_barrier(&sr->coh, all, len);
        free(all);
        th->phase = 3;
    } else if (th->phase == 3) {
        if (rc_drop_step(&sr->coh))
            th->phase = W.colls[o->coll].kind == DSM_COLL_BARRIER ? 6 : 4;
    } else if (th->phase == 4) {
        const struct coll_spec *c = &W.colls[o->coll];
        int64_t mine[2];
        struct coll_call call = { c->kind, c->root, c->op, DSM_DT_I64, 0, mine, 16 };
        contribution(r, o->coll, mine);
        if (c->kind == DSM_COLL_BARRIER || (c->kind == DSM_COLL_BCAST && c->root != r))
            call.len = 0;
        if ((rc = coll_begin(&sr->coll, &call, err)))
            sim_violation(&W.s, "rank %d: collective %u: %s", r, o->coll, err);
        W.began[r] += !W.release;
        th->phase = 5;
    } else {
        void *out = NULL;
        uint64_t len = 0;
        if (th->phase == 5 && coll_result(&sr->coll, &out, &len, err))
            sim_violation(&W.s, "rank %d: collective %u failed: %s", r, o->coll, err);
        else
            check_coll(r, o->coll, out, len);
        free(out);
        th->phase = 0;
        th->pc++;
        th->colls_done++;
    }
}

static void place_step(int r, struct thread *th, const struct op *o)
{
    struct srank *sr = &W.s.r[r];
    const struct coll_spec *c = &W.colls[o->coll];
    struct coll_call call = { .kind = DSM_COLL_BARRIER, .sig = 7 + o->coll };
    char err[DSM_ERRLEN];
    uint64_t len, p;
    void *out = NULL;
    int rc = 0;
    switch (th->phase) {
    case 0: case 4:
        rc = coll_begin(&sr->coll, &call, err);
        W.began[r] += th->phase == 0;
        th->phase++;
        break;
    case 1:
        if (!(rc = coll_result(&sr->coll, &out, &len, err))) {
            if (coh_place_begin(&sr->coh, c->first, c->n, c->homes))
                sim_violation(&W.s, "rank %d: no memory for a placement", r);
            th->upto = c->first;
            th->phase = 2;
        }
        break;
    case 2:
        p = coh_place_next(&sr->coh, th->upto);
        th->upto = (uint32_t)p;
        if (p == c->first + c->n)
            th->phase = 3;
        else
            th->moved = fault(r, th, (uint32_t)p, 1);
        break;
    case 3:
        th->full = coh_place_post(&sr->coh) == TP_FULL;
        th->phase += !th->full;
        break;
    case 5:
        if (!(rc = coll_result(&sr->coll, &out, &len, err))) {
            coh_place_end(&sr->coh);
            check_coll(r, o->coll, NULL, 0);
            th->phase = 0;
            th->upto = 0;
            th->pc++;
            th->colls_done++;
        }
        break;
    }
    free(out);
    if (rc)
        sim_violation(&W.s, "rank %d: placement %u: %s", r, o->coll, err);
}

static void pin_step(int r, struct thread *th, const struct op *o)
{
    struct srank *sr = &W.s.r[r];
    uint32_t p;
    if (th->phase == 0) {
        while (th->upto < o->count && coh_pin_page(&sr->coh, o->page + th->upto, (int)o->write))
            th->upto++;
        if (th->upto < o->count) {
            th->moved = fault(r, th, o->page + th->upto, (int)o->write);
            return;
        }
        th->phase = 1;
    } else if (th->phase == 1) {
        for (p = o->page; p < o->page + o->count; p++)
            if (o->write)
                do_write(r, p, o->word, ++W.writes);
            else
                check_read(r, o, p, o->word);
        th->phase = coh_unpin(&sr->coh, o->page, o->count) ? 2 : 3;
    }
    if (th->phase == 2) {
        th->full = coh_unpin_poke(&sr->coh) == TP_FULL;
        th->phase = th->full ? 2 : 3;
    }
    if (th->phase == 3) {
        th->phase = 0;
        th->upto = 0;
        th->pc++;
    }
}

void app_step(int r, int t)
{
    struct thread *th = &W.th[r][t];
    struct srank *sr = &W.s.r[r];
    const struct op *o = &th->ops[th->pc];
    uint32_t seq = core_seq(&sr->core);     /* as core_sleep's callers: before the step */
    uint64_t was = thread_progress(th);
    step_log("rank %d thread %d: %s page %u word %u lock %u (phase %d)", r, t,
             op_names[o->kind], o->page, o->word, o->lock, th->phase);
    core_lock(&sr->core);
    if (core_failed(&sr->core)) {
        th->ended = 1;
    } else if (o->kind == OP_READ || o->kind == OP_WRITE) {
        if (fault(r, th, o->page, o->kind == OP_WRITE)) {
            if (o->kind == OP_READ)
                check_read(r, o, o->page, o->word);
            else
                do_write(r, o->page, o->word, ++W.writes);
            th->pc++;
        }
    } else if (o->kind == OP_LOCK_INC) {
        lock_inc(r, th, o);
    } else if (o->kind == OP_PIN) {
        pin_step(r, th, o);
    } else if (o->kind == OP_COLL && W.colls[o->coll].kind == COLL_PLACE) {
        place_step(r, th, o);
    } else {
        collective_step(r, th, o);
    }
    /* Finalize waits for the comm thread's end, which the simulator has not. */
    th->asleep = thread_progress(th) == was && !th->moved && o->kind != OP_FINALIZE;
    th->moved = 0;
    th->seq = seq;
    core_unlock(&sr->core);
    if (th->ended && threads_done(r, 0) && !sr->dead) {  /* the error reaches the program */
        step_log("rank %d exits after its failure: %s", r, sr->core.failure);
        if (W.nested)
            W.exiting = r;      /* once the thread it interrupted is out of its step */
        else
            simnet_kill(&W.s, r);
    }
}

