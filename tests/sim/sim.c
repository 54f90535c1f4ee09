/* Deterministic simulation of the protocol layers, after FoundationDB's
 * simulation testing and TigerBeetle's VOPR.
 *
 * N simulated ranks run the real coherence and sync code (libdsm/csrc) in
 * one process over simnet.c's per-pair FIFO channels.  One seeded random
 * scheduler picks, at every step, one of: an application thread's next
 * step (a read, a write, a lock-protected increment, a barrier, finalize),
 * the delivery of the next messages on a channel, the drain of a rank's
 * ring, or a held-back (deferred) message.  After every step it checks:
 *   - at most one writable copy of a page, and none beside read copies;
 *   - every copy's data is the last write (a shadow memory), and every read
 *     returns it: sequential consistency;
 *   - the home's copyset and owner match the protections;
 *   - a lock has at most one holder, granted in the order its home got
 *     the requests (FIFO);
 *   - no message is delivered twice, and at the end none is left or lost;
 *   - nothing hangs: while work is left, some step is possible.
 * The ring holds DSM_RING_CAP = 2 messages here, so the ring-full path
 * runs all the time.
 *
 *   sim --seeds A:B [--drop] [--corrupt]   run seeds A..B-1; the first failure
 *                                          prints its seed and trace
 *   sim --seed N [--drop] [--corrupt]      replay one seed, tracing every step
 *
 * --drop kills one rank at a random step: every other rank must then reach
 * the failure (the fail hook), and none may hang.  --corrupt flips a byte
 * of one copy, to show the checker catches it. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"

#define MAX_OPS 40
#define MAX_STEPS 200000
#define TRACE_KEEP 80
#define MAX_LOCKS 2

enum op_kind { OP_READ, OP_WRITE, OP_LOCK_INC, OP_BARRIER, OP_FINALIZE, OP_PIN };
static const char *op_names[] = { "read", "write", "lock-inc", "barrier", "finalize", "pin" };

struct op {
    enum op_kind kind;
    uint32_t page, word, lock;
    uint32_t count, write;      /* OP_PIN: pages [page, page + count), for writing */
};

struct thread {
    struct op ops[MAX_OPS];
    int nops, pc, phase;
    int full;                   /* the last step found the ring full */
    uint64_t epoch;
    int ended;                  /* stopped by the job's failure */
    uint32_t upto;              /* OP_PIN: pages pinned so far */
};

struct lock_fifo {
    int q[64];
    int head, len;
};

static struct {
    struct sim s;
    uint64_t rng, seed;
    int nthreads;
    uint64_t npages;
    uint32_t nlocks;
    struct thread th[SIM_MAX_RANKS][SIM_MAX_THREADS];
    unsigned char *shadow;
    uint64_t writes;
    struct lock_fifo fifo[MAX_LOCKS];
    uint8_t was_held[SIM_MAX_RANKS][MAX_LOCKS];
    int dropped;                /* rank killed, or -1 */
    int dropped_finalized;      /* it had told its peers DSM_FINALIZE */
    int tracing;
    char trace[TRACE_KEEP][200];
    unsigned ntrace;
} W;

/* ---------------------------------------------------------- helpers */

static uint64_t rnd(void)          /* splitmix64 */
{
    uint64_t z = (W.rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
    return rnd() % n;
}

static void step_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void step_log(const char *fmt, ...)
{
    char *line = W.trace[W.ntrace++ % TRACE_KEEP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof W.trace[0], fmt, ap);
    va_end(ap);
    if (W.tracing)
        printf("  %s\n", line);
}

static uint64_t *word_at(unsigned char *mem, uint32_t page, uint32_t word)
{
    return (uint64_t *)(mem + (uint64_t)page * SIM_PAGE + word * 8);
}

/* ---------------------------------------------------------- the scenario */

/* Threads get random reads and writes (words 0..6: word 7 of a page is
 * the counter of lock page % nlocks), lock-protected increments, the same
 * number of barriers on thread 0 of every rank, and finalize at the end. */
static void make_scenario(void)
{
    int phases = (int)below(4), r, t, p, i;
    W.npages = 1 + below(6);
    W.nlocks = 1 + (uint32_t)below(MAX_LOCKS);
    W.nthreads = 1 + (int)below(SIM_MAX_THREADS);
    for (r = 0; r < W.s.n; r++)
        for (t = 0; t < W.nthreads; t++) {
            struct thread *th = &W.th[r][t];
            memset(th, 0, sizeof *th);
            for (p = 0; p <= phases; p++) {
                int n = (int)below(12);
                for (i = 0; i < n && th->nops < MAX_OPS - 2; i++) {
                    struct op *o = &th->ops[th->nops++];
                    uint64_t k = below(100);
                    o->kind = k < 40 ? OP_READ : k < 80 ? OP_WRITE : k < 92 ? OP_LOCK_INC : OP_PIN;
                    o->page = (uint32_t)below(W.npages);
                    o->count = 1 + (uint32_t)below(W.npages - o->page);
                    o->write = (uint32_t)below(2);
                    o->word = (uint32_t)below(SIM_WORDS - 1);
                    o->lock = (uint32_t)below(W.nlocks);
                }
                if (t == 0 && p < phases)
                    th->ops[th->nops++].kind = OP_BARRIER;
            }
            if (t == 0)
                th->ops[th->nops++].kind = OP_FINALIZE;
        }
}

/* The counter of a lock: word 7 of a page. */
static uint32_t counter_page(uint32_t lock)
{
    return lock % (uint32_t)W.npages;
}

/* ---------------------------------------------------------- application steps */

static int thread_done(const struct thread *th)
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

/* OP_PIN, as dsm_pin: phase 0 fetches the pages in ascending order and
 * pins each as soon as it is here; phase 1 holds them all (reads, or
 * writes, each page); phase 2 unpins and posts DSM_UNPIN.  Ready in phase 0
 * when the next page can be asked for or has come. */
static int pin_ready(struct srank *sr, const struct thread *th, const struct op *o)
{
    return th->phase || coh_fault_ready(&sr->coh, o->page + th->upto, (int)o->write);
}

/* Can this thread's next step change something? */
static int thread_ready(int r, int t)
{
    struct thread *th = &W.th[r][t];
    struct srank *sr = &W.s.r[r];
    const struct op *o = &th->ops[th->pc];
    if (sr->dead || thread_done(th))
        return 0;
    if (sr->core.failed)
        return 1;               /* it wakes to the failure */
    if (th->full && !ring_room(sr))
        return 0;
    switch (o->kind) {
    case OP_READ:
    case OP_WRITE:
        return coh_fault_ready(&sr->coh, o->page, o->kind == OP_WRITE);
    case OP_LOCK_INC:
        if (th->phase == 0)
            return sr->sync.lock_state[o->lock] == LOCK_FREE;
        if (th->phase == 1)
            return sync_lock_held(&sr->sync, o->lock);
        return th->phase == 3 || coh_fault_ready(&sr->coh, counter_page(o->lock), 1);
    case OP_BARRIER:
        return th->phase == 0 || sync_coll_reached(&sr->sync, th->epoch);
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
    return st == COH_DONE;
}

static void check_read(int r, uint32_t page, uint32_t word)
{
    uint64_t got = *word_at(W.s.r[r].core.rw, page, word);
    uint64_t want = *word_at(W.shadow, page, word);
    if (got != want)
        sim_violation(&W.s, "rank %d read page %u word %u = %llu, but the last write was %llu",
                      r, page, word, (unsigned long long)got, (unsigned long long)want);
}

static void do_write(int r, uint32_t page, uint32_t word, uint64_t value)
{
    *word_at(W.s.r[r].core.rw, page, word) = value;
    *word_at(W.shadow, page, word) = value;
}

static void lock_inc(int r, struct thread *th, const struct op *o)
{
    struct srank *sr = &W.s.r[r];
    char err[DSM_ERRLEN];
    uint32_t cp = counter_page(o->lock);
    int rc;
    if (th->phase == 0) {
        if ((rc = sync_lock_ask(&sr->sync, o->lock, err)) == 0)
            th->phase = 1;
        else if (rc != TP_FULL)
            sim_violation(&W.s, "rank %d: lock %u: %s", r, o->lock, err);
        th->full = rc == TP_FULL && sr->sync.lock_state[o->lock] == LOCK_FREE;
    } else if (th->phase == 1) {
        th->phase = 2;
    } else if (th->phase == 2) {
        if (fault(r, th, cp, 1)) {
            check_read(r, cp, SIM_WORDS - 1);
            do_write(r, cp, SIM_WORDS - 1, *word_at(W.shadow, cp, SIM_WORDS - 1) + 1);
            th->phase = 3;
        }
    } else if ((rc = sync_lock_give(&sr->sync, o->lock, err)) == 0) {
        th->phase = 0;
        th->pc++;
    } else {
        th->full = rc == TP_FULL;
        if (rc != TP_FULL)
            sim_violation(&W.s, "rank %d: release lock %u: %s", r, o->lock, err);
    }
}

static int fault(int r, struct thread *th, uint32_t page, int write);
static void check_read(int r, uint32_t page, uint32_t word);
static void do_write(int r, uint32_t page, uint32_t word, uint64_t value);

static void pin_step(int r, struct thread *th, const struct op *o)
{
    struct srank *sr = &W.s.r[r];
    uint32_t p;
    if (th->phase == 0) {
        while (th->upto < o->count && coh_pin_page(&sr->coh, o->page + th->upto, (int)o->write))
            th->upto++;
        if (th->upto < o->count) {
            fault(r, th, o->page + th->upto, (int)o->write);
            return;
        }
        th->phase = 1;
    } else if (th->phase == 1) {
        for (p = o->page; p < o->page + o->count; p++)
            if (o->write)
                do_write(r, p, o->word, ++W.writes);
            else
                check_read(r, p, o->word);
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

static void collective_step(int r, struct thread *th, const struct op *o)
{
    struct srank *sr = &W.s.r[r];
    struct msg fin = { .type = DSM_FINALIZE, .origin = (uint16_t)r };
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
    if (th->phase == 0) {
        rc = sync_coll_arrive(&sr->sync, COLL_BARRIER, 0, &th->epoch, err);
        th->full = rc == TP_FULL;
        th->phase = rc == 0;
        if (rc && rc != TP_FULL)
            sim_violation(&W.s, "rank %d: barrier: %s", r, err);
    } else {
        if (sync_coll_result(&sr->sync, err))
            sim_violation(&W.s, "rank %d: barrier failed: %s", r, err);
        th->phase = 0;
        th->pc++;
    }
}

static void app_step(int r, int t)
{
    struct thread *th = &W.th[r][t];
    struct srank *sr = &W.s.r[r];
    const struct op *o = &th->ops[th->pc];
    step_log("rank %d thread %d: %s page %u word %u lock %u (phase %d)", r, t,
             op_names[o->kind], o->page, o->word, o->lock, th->phase);
    pthread_mutex_lock(&sr->core.mu);
    if (sr->core.failed) {
        th->ended = 1;
    } else if (o->kind == OP_READ || o->kind == OP_WRITE) {
        if (fault(r, th, o->page, o->kind == OP_WRITE)) {
            if (o->kind == OP_READ)
                check_read(r, o->page, o->word);
            else
                do_write(r, o->page, o->word, ++W.writes);
            th->pc++;
        }
    } else if (o->kind == OP_LOCK_INC) {
        lock_inc(r, th, o);
    } else if (o->kind == OP_PIN) {
        pin_step(r, th, o);
    } else {
        collective_step(r, th, o);
    }
    pthread_mutex_unlock(&sr->core.mu);
    if (th->ended && threads_done(r, 0)) {   /* the error reaches the program, which exits */
        step_log("rank %d exits after its failure: %s", r, sr->core.failure);
        simnet_kill(&W.s, r);
    }
}

/* ---------------------------------------------------------- the checker */

static void observe(struct sim *s, int dst, const struct msg *m)
{
    struct lock_fifo *f;
    (void)s, (void)dst;
    if (m->type != DSM_LOCK_ACQ || m->lk.lock >= MAX_LOCKS)
        return;
    f = &W.fifo[m->lk.lock];
    f->q[(f->head + f->len++) % 64] = m->origin;
}

static void check_page(uint32_t p)
{
    struct srank *home = &W.s.r[page_home(&W.s.r[0].core, p)];
    struct dir *d = coh_dir(&home->coh, p);
    int r, writer = -1, readers = 0;
    for (r = 0; r < W.s.n; r++) {
        const struct core *c = &W.s.r[r].core;
        int prot = c->pages[p].prot;
        if (prot == DSM_PROT_NONE)
            continue;
        if (memcmp(c->rw + (uint64_t)p * SIM_PAGE, W.shadow + (uint64_t)p * SIM_PAGE, SIM_PAGE))
            sim_violation(&W.s, "rank %d may read page %u, but its copy is not the last write",
                          r, p);
        if (prot == DSM_PROT_RW) {
            if (writer >= 0)
                sim_violation(&W.s, "page %u is writable at ranks %d and %d", p, writer, r);
            writer = r;
        } else {
            readers++;
        }
        if (!d->busy && r != d->owner && !(d->copyset >> r & 1))
            sim_violation(&W.s, "rank %d holds page %u, but the home's directory (owner %d, "
                          "copyset %#llx) does not say so", r, p, d->owner,
                          (unsigned long long)d->copyset);
    }
    if (writer >= 0 && readers)
        sim_violation(&W.s, "page %u is writable at rank %d while %d ranks read it", p, writer,
                      readers);
    if (writer >= 0 && !d->busy && (writer != d->owner || d->copyset))
        sim_violation(&W.s, "page %u is writable at rank %d, but the home says owner %d, "
                      "copyset %#llx", p, writer, d->owner, (unsigned long long)d->copyset);
}

static void check_locks(void)
{
    uint32_t k;
    int r, holders;
    for (k = 0; k < W.nlocks; k++) {
        for (holders = 0, r = 0; r < W.s.n; r++) {
            int held = W.s.r[r].sync.lock_state[k] == LOCK_HELD;
            struct lock_fifo *f = &W.fifo[k];
            holders += held;
            if (held && !W.was_held[r][k]) {
                if (!f->len || f->q[f->head] != r)
                    sim_violation(&W.s, "lock %u granted to rank %d, but rank %d asked first",
                                  k, r, f->len ? f->q[f->head] : -1);
                else
                    f->head = (f->head + 1) % 64, f->len--;
            }
            W.was_held[r][k] = (uint8_t)held;
        }
        if (holders > 1)
            sim_violation(&W.s, "lock %u has %d holders", k, holders);
    }
}

/* A thread holding pins (OP_PIN phase 1) still has every page pinned, with
 * the access it pinned it for. */
static void check_pins(void)
{
    int r, t;
    uint32_t p;
    for (r = 0; r < W.s.n; r++)
        for (t = 0; t < W.nthreads; t++) {
            const struct thread *th = &W.th[r][t];
            const struct op *o = &th->ops[th->pc];
            if (thread_done(th) || o->kind != OP_PIN || th->phase > 1)
                continue;
            for (p = o->page; p < o->page + (th->phase ? o->count : th->upto); p++)
                if (!W.s.r[r].core.pages[p].pinned ||
                    !coh_satisfied(&W.s.r[r].core, p, (int)o->write))
                    sim_violation(&W.s, "rank %d pinned page %u for %s, but it went", r, p,
                                  o->write ? "writing" : "reading");
        }
}

static void check_step(void)
{
    uint32_t p;
    if (W.dropped >= 0)
        return;                 /* after a death only liveness is checked */
    for (p = 0; p < W.npages; p++)
        check_page(p);
    check_pins();
    check_locks();
}

/* Everything finished: nothing may be left in flight or half done. */
static void check_end(void)
{
    struct sim *s = &W.s;
    int r, p, t;
    uint64_t id;
    for (r = 0; r < s->n; r++) {
        struct srank *sr = &s->r[r];
        if (sr->dead)
            continue;
        for (t = 0; t < W.nthreads; t++)
            if (!thread_done(&W.th[r][t]))
                sim_violation(s, "hang: rank %d thread %d waits in %s (phase %d) and no step "
                              "is possible", r, t, op_names[W.th[r][t].ops[W.th[r][t].pc].kind],
                              W.th[r][t].phase);
        if (W.dropped >= 0) {
            if (!W.dropped_finalized && !sr->core.failed)
                sim_violation(s, "rank %d never learnt that rank %d died", r, W.dropped);
            continue;
        }
        if (sr->core.failed)
            sim_violation(s, "rank %d failed: %s", r, sr->core.failure);
        for (p = 0; p < s->n; p++)
            if (s->ch[r][p].len)
                sim_violation(s, "%u messages from rank %d to %d left over", s->ch[r][p].len, r,
                              p);
        for (id = 0; id < W.npages; id++)
            if (sr->core.pages[id].pending ||
                (page_home(&sr->core, id) == r && coh_dir(&sr->coh, id)->busy))
                sim_violation(s, "rank %d: page %llu still pending or busy", r,
                              (unsigned long long)id);
        if (sr->tp.ring.len || sr->deferred || sr->coh.wait_head || sr->coh.parked)
            sim_violation(s, "rank %d: work left in its ring or queues", r);
    }
    for (id = 0; id < s->next_id; id++)
        if (id >= s->delivered_cap || s->delivered[id] != 1)
            sim_violation(s, "message %llu was %s", (unsigned long long)id,
                          id >= s->delivered_cap || !s->delivered[id] ? "lost" : "duplicated");
}

/* ---------------------------------------------------------- the scheduler */

enum act_kind { ACT_APP, ACT_DELIVER, ACT_RING, ACT_DEFERRED };
struct action {
    enum act_kind kind;
    int a, b;
};

static int enabled(struct action *out)
{
    struct sim *s = &W.s;
    int n = 0, r, p, t;
    for (r = 0; r < s->n; r++) {
        struct srank *sr = &s->r[r];
        if (sr->dead)
            continue;
        for (t = 0; t < W.nthreads; t++)
            if (thread_ready(r, t))
                out[n++] = (struct action){ ACT_APP, r, t };
        for (p = 0; p < s->n; p++)
            if (s->ch[p][r].len)
                out[n++] = (struct action){ ACT_DELIVER, p, r };
        if (sr->tp.ring.len)
            out[n++] = (struct action){ ACT_RING, r, 0 };
        if (sr->deferred && sr->deferred->due <= sim_now)
            out[n++] = (struct action){ ACT_DEFERRED, r, 0 };
    }
    return n;
}

/* Time jumps to the next deferred message when nothing else can run. */
static int advance_clock(void)
{
    uint64_t next = UINT64_MAX;
    int r;
    for (r = 0; r < W.s.n; r++)
        if (!W.s.r[r].dead && W.s.r[r].deferred && W.s.r[r].deferred->due < next)
            next = W.s.r[r].deferred->due;
    if (next == UINT64_MAX)
        return 0;
    sim_now = next;
    return 1;
}

static void act(const struct action *a)
{
    struct sim *s = &W.s;
    switch (a->kind) {
    case ACT_APP:
        app_step(a->a, a->b);
        break;
    case ACT_DELIVER: {
        const struct sim_msg *m = s->ch[a->a][a->b].head;
        int burst = 1 + (int)below(3);
        step_log("deliver %d -> %d: %s%s (x%d)", a->a, a->b,
                 m->eof ? "end of stream" : msg_name(m->m.type), "", burst);
        simnet_deliver(s, a->a, a->b, burst, observe);
        break;
    }
    case ACT_RING: {
        struct srank *sr = &s->r[a->a];
        unsigned i;
        step_log("rank %d drains its ring (%u)", a->a, sr->tp.ring.len);
        for (i = 0; i < sr->tp.ring.len; i++)
            observe(s, a->a, &sr->tp.ring.slot[(sr->tp.ring.head + i) % DSM_RING_CAP]);
        simnet_drain_ring(sr);
        break;
    }
    case ACT_DEFERRED:
        step_log("rank %d runs a held-back %s", a->a, msg_name(s->r[a->a].deferred->m.type));
        simnet_fire_deferred(&s->r[a->a]);
        break;
    }
}

/* One seed: 0 if every rule held. */
static int run(uint64_t seed, int drop, int corrupt)
{
    static struct action acts[SIM_MAX_RANKS * (SIM_MAX_THREADS + SIM_MAX_RANKS + 2)];
    struct sim *s = &W.s;
    uint64_t step, drop_at, corrupt_at, block, readahead, hold;
    int r, n, failed;
    memset(s, 0, sizeof *s);
    W.rng = W.seed = seed;
    W.dropped = -1;
    W.ntrace = 0;
    W.writes = 0;
    memset(W.fifo, 0, sizeof W.fifo);
    memset(W.was_held, 0, sizeof W.was_held);
    sim_now = 0;
    s->n = 2 + (int)below(SIM_MAX_RANKS - 1);
    make_scenario();
    block = 1 + below(3);
    readahead = 1 + below(4);
    hold = below(3) ? 0 : 1000 * (1 + below(5));
    drop_at = drop ? below(400) : UINT64_MAX;
    corrupt_at = corrupt ? 1 + below(200) : UINT64_MAX;
    W.shadow = calloc(W.npages, SIM_PAGE);
    for (r = 0; r < s->n; r++)
        if (simnet_rank_init(s, r, W.npages, block, readahead, hold, W.nlocks))
            return 1;
    if (W.tracing)
        printf("seed %llu: %d ranks x %d threads, %llu pages, block %llu, read-ahead %llu, "
               "hold %llu ns, %u locks\n", (unsigned long long)seed, s->n, W.nthreads,
               (unsigned long long)W.npages, (unsigned long long)block,
               (unsigned long long)readahead, (unsigned long long)hold, W.nlocks);
    for (step = 0; step < MAX_STEPS && !s->violation[0]; step++) {
        if (step == drop_at) {
            W.dropped = (int)below((uint64_t)s->n);
            W.dropped_finalized = s->r[W.dropped].self_finalized;
            step_log("rank %d dies", W.dropped);
            simnet_kill(s, W.dropped);
        }
        if (step == corrupt_at) {
            for (r = 0; r < s->n; r++)
                if (s->r[r].core.pages[0].prot != DSM_PROT_NONE)
                    break;
            if (r < s->n) {
                step_log("a byte of rank %d's copy of page 0 flips", r);
                s->r[r].core.rw[3] ^= 0x40;
            }
        }
        if (!(n = enabled(acts))) {
            if (advance_clock())
                continue;
            break;
        }
        act(&acts[below((uint64_t)n)]);
        sim_now += 1000;
        check_step();
    }
    if (!s->violation[0] && step == MAX_STEPS)
        sim_violation(s, "no end after %d steps", MAX_STEPS);
    if (!s->violation[0])
        check_end();
    failed = s->violation[0] != 0;
    if (failed) {
        unsigned i = W.ntrace > TRACE_KEEP ? W.ntrace - TRACE_KEEP : 0;
        printf("FAILED seed %llu at step %llu: %s\n", (unsigned long long)seed,
               (unsigned long long)step, s->violation);
        if (!W.tracing) {
            printf("the last %u steps:\n", W.ntrace - i);
            for (; i < W.ntrace; i++)
                printf("  %s\n", W.trace[i % TRACE_KEEP]);
        }
        printf("replay: make sim SEED=%llu%s%s\n", (unsigned long long)seed,
               drop ? " SIMFLAGS=--drop" : "", corrupt ? " SIMFLAGS=--corrupt" : "");
    }
    for (r = 0; r < s->n; r++)
        simnet_rank_free(&s->r[r]);
    for (r = 0; r < s->n * s->n; r++)
        while (s->ch[r / s->n][r % s->n].head) {
            struct sim_msg *m = s->ch[r / s->n][r % s->n].head;
            s->ch[r / s->n][r % s->n].head = m->next;
            free(m->payload);
            free(m);
        }
    free(s->delivered);
    free(W.shadow);
    return failed;
}

int main(int argc, char **argv)
{
    unsigned long long a = 0, b = 1;
    int i, drop = 0, corrupt = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seeds") && i + 1 < argc &&
            sscanf(argv[++i], "%llu:%llu", &a, &b) == 2) {
            continue;
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc &&
                   sscanf(argv[++i], "%llu", &a) == 1) {
            b = a + 1;
            W.tracing = 1;
        } else if (!strcmp(argv[i], "--drop")) {
            drop = 1;
        } else if (!strcmp(argv[i], "--corrupt")) {
            corrupt = 1;
        } else {
            fprintf(stderr, "usage: sim (--seeds A:B | --seed N) [--drop] [--corrupt]\n");
            return 2;
        }
    }
    for (i = 0; a + (unsigned long long)i < b; i++)
        if (run(a + (unsigned long long)i, drop, corrupt))
            return 1;
    printf("%d seeds passed%s%s\n", i, drop ? " (--drop)" : "", corrupt ? " (--corrupt)" : "");
    return 0;
}
