/* The simulated application: the scenario a seed makes (the same
 * collectives on every rank, random memory operations and lock-protected
 * increments around them), and one step of a thread at a time.  Every
 * access, lock, collective, placement, pin and finalize is an operation of
 * the shipped code (ops.h), stepped as api.c's run() steps it; what is
 * here is which tasks run, and the checks of what they see. */
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
static void random_op(struct task *o, int r, int t, int ph)
{
    uint64_t k = below(100);
    uint32_t w, mine[SIM_WORDS], n = 0;
    *o = (struct task){ .kind = k < 40 ? T_READ : k < 80 ? T_WRITE : k < 92 ? T_LOCK_INC : T_PIN,
                      .page = (uint32_t)below(W.npages),
                      .word = (uint32_t)below(DATA_WORDS),
                      .lock = (uint32_t)below(W.nlocks), .phase = ph };
    o->count = 1 + (uint32_t)below(W.npages - o->page);
    o->write = (uint32_t)below(2);
    if (W.release && o->kind == T_PIN)
        o->kind = T_PREFETCH;      /* pins are for sequential mode: bring the pages only */
    if (!W.release || o->kind != T_WRITE)
        return;
    for (w = 0; t == 0 && w < DATA_WORDS; w++)      /* data-race-free: only its own words */
        if (owner(o->page, w, ph) == r)
            mine[n++] = w;
    if (n)
        o->word = mine[below(n)];
    else
        o->kind = T_READ;
}

/* A random collective: barrier, bcast, allreduce, reduce, allgather, and
 * in sequential mode a placement of a random range of pages at random
 * homes (with --hosts, random ranks for now: place_at_leaders makes them
 * their hosts' leaders once the hosts are drawn). */
static void random_spec(struct coll_spec *c)
{
    static const int kinds[] = { DSM_COLL_BARRIER, DSM_COLL_BCAST, DSM_COLL_REDUCE,
                                 DSM_COLL_REDUCE, DSM_COLL_GATHER };
    int i = (int)below(W.release ? 5 : 6);     /* 5: a placement */
    c->kind = i == 5 ? COLL_PLACE : kinds[i];
    c->root = i == 2 || i == 4 ? DSM_ROOT_ALL : (int)below((uint64_t)W.s.n);
    c->op = i == 3 ? DSM_OP_MAX : DSM_OP_SUM;
    c->wide = c->kind == DSM_COLL_REDUCE && below(2);
    if (c->kind == COLL_PLACE) {
        c->first = (uint32_t)below(W.npages);
        c->n = 1 + (uint32_t)below(W.npages - c->first);
        for (i = 0; i < (int)c->n; i++)
            c->homes[i] = (uint16_t)below((uint64_t)W.s.n);
    }
}

/* A placement's homes, drawn as ranks, become the leaders of their hosts:
 * across hosts only leaders home pages, as libdsm/placement.py asks. */
static void spec_at_leaders(struct coll_spec *c)
{
    uint32_t i;
    for (i = 0; c->kind == COLL_PLACE && i < c->n; i++)
        c->homes[i] = W.s.leaders[W.s.host[c->homes[i]]];
}

void place_at_leaders(void)
{
    int p;
    for (p = 0; p < MAX_COLLS + 1; p++)
        spec_at_leaders(&W.colls[p]);
    spec_at_leaders(&W.odd);
}

/* The call (without its data) of collective idx made as c; a placement's
 * is its first barrier, with the placement's signature. */
static struct coll_call spec_call(const struct coll_spec *c, uint32_t idx)
{
    if (c->kind == COLL_PLACE)
        return (struct coll_call){ .kind = DSM_COLL_BARRIER, .sig = 7 + idx };
    return (struct coll_call){ .kind = c->kind, .root = c->root, .op = c->op,
                               .dtype = DSM_DT_I64, .len = c->wide ? 32 : 16 };
}

/* What rank r calls as the job's collective idx. */
static const struct coll_spec *spec_of(int r, uint32_t idx)
{
    return (int)idx == W.odd_at && W.odd_ranks >> r & 1 ? &W.odd : &W.colls[idx];
}

static int levels(void);

/* --mismatch: some ranks call another collective at odd_at (a nonempty
 * proper subset of them), the others the job's.  In two levels no
 * placement is among them: collectives.py's place first shows on the
 * two-level path that every rank makes it (a bcast under the placement's
 * signature, not modelled here; tests/test_placement.py has the
 * mismatch), and a placement itself runs among all the ranks. */
static void make_mismatch(int phases)
{
    struct coll_call a, b;
    struct coll_sig sa, sb;
    W.odd_at = -1;
    if (!W.mismatch || !phases)
        return;
    W.odd_at = (int)below((uint64_t)phases);
    W.odd_ranks = 1 + below((1ULL << W.s.n) - 2);
    if (levels() && W.colls[W.odd_at].kind == COLL_PLACE) {
        W.odd_at = -1;
        return;
    }
    a = spec_call(&W.colls[W.odd_at], (uint32_t)W.odd_at);
    sa = coll_identity(&a);
    do {
        random_spec(&W.odd);
        b = spec_call(&W.odd, (uint32_t)W.odd_at);
        sb = coll_identity(&b);
    } while (!coll_sig_cmp(&sa, &sb) || (levels() && W.odd.kind == COLL_PLACE));
}

/* Threads get random reads and writes (words 0..5: words 6 and 7 hold
 * the locks' counters) and lock-protected increments; thread
 * 0 of every rank makes the same collectives between them (random_spec),
 * and finalize at the end.  A
 * placement, like every collective in release mode, synchronises the
 * whole rank (see phase_open).  In release mode
 * a last barrier comes before finalize, the writes are data-race-free (a
 * word has one writer between two collectives, and only thread 0 writes
 * outside locks), and a collective synchronises the whole rank: thread 0
 * calls it once thread 1 is done with the ops before it, and thread 1 goes
 * on after it returned.  With --mismatch, in release mode, no ops come
 * between the collective that fails and the next: a failed collective
 * synchronises no memory. */
void make_scenario(void)
{
    int phases = (int)below(MAX_COLLS + 1), colls = phases + W.release, r, t, p, i;
    W.npages = 1 + below(6);
    W.nlocks = 1 + (uint32_t)below(MAX_LOCKS);
    W.nthreads = 1 + (int)below(SIM_MAX_THREADS);
    for (p = 0; p < colls; p++)
        if (p < phases)
            random_spec(&W.colls[p]);
        else                        /* release mode's last barrier */
            W.colls[p] = (struct coll_spec){ .kind = DSM_COLL_BARRIER, .op = DSM_OP_SUM,
                                             .root = (int)below((uint64_t)W.s.n) };
    make_mismatch(phases);
    for (r = 0; r < W.s.n; r++)
        for (t = 0; t < W.nthreads; t++) {
            struct thread *th = &W.th[r][t];
            memset(th, 0, sizeof *th);
            for (p = 0; p <= phases; p++) {
                int n = (int)below(12);
                if (W.release && W.odd_at >= 0 && p == W.odd_at + 1)
                    n = 0;
                for (i = 0; i < n && th->ntasks < MAX_TASKS - MAX_COLLS - 3; i++)
                    random_op(&th->tasks[th->ntasks++], r, t, p);
                if (t == 0 && p < colls)
                    th->tasks[th->ntasks++] = (struct task){ .kind = T_COLL, .coll = (uint32_t)p };
            }
            if (t == 0)
                th->tasks[th->ntasks++].kind = T_FINALIZE;
        }
}

/* Rank r's contribution to collective `idx`: four 64-bit numbers, the
 * first two of them but for a wide reduce. */
static void contribution(int r, uint32_t idx, int64_t out[4])
{
    out[0] = r + 1;
    out[1] = (int64_t)(r + 1) * (idx + 3) - 5;
    out[2] = 7 - (int64_t)r * (idx + 5);
    out[3] = (int64_t)(r + 2) * (r + 2) - (int64_t)idx;
}

/* No rank ends collective idx before every rank began it. */
static void check_began(int r, uint32_t idx)
{
    int q;
    for (q = 0; q < W.s.n; q++)
        if (!W.s.r[q].dead && W.began[q] <= (int)idx)
            sim_violation(&W.s, "rank %d left collective %u before rank %d began it", r, idx, q);
}

/* --mismatch: collective odd_at must fail on every rank (rc, err), with
 * the error that names the smallest and the largest identity the ranks
 * called (the lower rank of equals), as coll.c says it: in release mode
 * too, where a memory barrier comes first. */
static void check_mismatch(int r, int rc, const char *err)
{
    struct coll_call call;
    struct coll_sig s, lo = { 0, 0 }, hi = { 0, 0 };
    int q, lo_rank = -1, hi_rank = -1;
    char want[DSM_ERRLEN];
    check_began(r, (uint32_t)W.odd_at);
    for (q = 0; q < W.s.n; q++) {
        call = spec_call(spec_of(q, (uint32_t)W.odd_at), (uint32_t)W.odd_at);
        s = coll_identity(&call);
        if (lo_rank < 0 || coll_sig_cmp(&s, &lo) < 0)
            lo = s, lo_rank = q;
        if (hi_rank < 0 || coll_sig_cmp(&s, &hi) > 0)
            hi = s, hi_rank = q;
    }
    coll_mismatch(want, sizeof want, &lo, lo_rank, &hi, hi_rank);
    if (rc != DSM_ECOLL || strcmp(err, want))
        sim_violation(&W.s, "rank %d: collective %d, where ranks called different ones, %s "
                      "%s; it must fail with \"%s\"", r, W.odd_at,
                      rc ? "failed with" : "ended", rc ? err : "without an error", want);
}

/* Rank r ended placement c, so every rank began its second barrier,
 * having switched its table: each must name the new homes. */
static void check_placed(int r, const struct coll_spec *c)
{
    uint32_t i;
    int q;
    for (q = 0; q < W.s.n; q++)
        for (i = 0; i < c->n; i++)
            if (page_home(&W.s.r[q].core, c->first + i) != c->homes[i])
                sim_violation(&W.s, "rank %d ended the placement of page %u at rank %d, but "
                              "rank %d says its home is %d", r, c->first + i, c->homes[i], q,
                              page_home(&W.s.r[q].core, c->first + i));
}

/* What rank r must get from collective idx (or not get). */
static void check_coll(int r, uint32_t idx, const void *out, uint64_t len)
{
    const struct coll_spec *c = spec_of(r, idx);
    int gets = c->kind == DSM_COLL_BCAST ? r != c->root
             : c->kind != DSM_COLL_BARRIER && c->kind != COLL_PLACE &&
               (c->root == DSM_ROOT_ALL || c->root == r);
    int64_t want[4] = { 0, 0, 0, 0 }, v[4];
    int q, i, words = c->kind == DSM_COLL_REDUCE && c->wide ? 4 : 2;
    check_began(r, idx);
    if (c->kind == COLL_PLACE)
        check_placed(r, c);
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
        for (i = 0; c->kind == DSM_COLL_REDUCE && i < words; i++)
            want[i] = c->op == DSM_OP_SUM ? want[i] + v[i] : !q || v[i] > want[i] ? v[i]
                                                                                : want[i];
    }
    if (len != 8 * (uint64_t)words || memcmp(out, want, 8 * (size_t)words))
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

/* ---------------------------------------------------------- two levels */

/* --hosts in sequential mode: a collective in two levels, as hostcoll.c
 * runs it with share=host across hosts.  What a host's ranks do in its
 * control area is modelled here: each rank arrives (the others count the
 * collective with coll_skip); once all have, the leader runs coll.c's
 * collective among the leaders (call.leaders: the shipped code), starting
 * from the host's lowest and highest identity, with the host's bytes (a
 * reduce's contributions gathered); then it hands the outcome out, and
 * each rank takes its result from it.  A large reduce (coll.c's
 * coll_reduce_among_all, which a wide one is here) brings no bytes: the
 * leaders' collective is a barrier that checks the identities, and once
 * it handed out success every rank runs coll.c's reduce among all the
 * ranks (phase 2 of the task). */
static int mismatched(const struct task *o);
static int op_steps(int r, struct thread *th, const struct task *o);
static void next_task(struct thread *th);

static int levels(void)
{
    return W.hosts && !W.release;
}

/* Does rank r make task o in two levels: a collective, but a placement
 * (which runs among all the ranks, as dsm_place does). */
static int two_level(int r, const struct task *o)
{
    return levels() && o->kind == T_COLL && spec_of(r, o->coll)->kind != COLL_PLACE;
}

static int leader_of(int r)
{
    return W.s.leaders[W.s.host[r]];
}

/* Does rank r's collective idx run among all the ranks after the check? */
static int among_all(int r, uint32_t idx)
{
    struct coll_call c = spec_call(spec_of(r, idx), idx);
    return c.kind == DSM_COLL_REDUCE && coll_reduce_among_all(c.len, W.s.n);
}

/* The call rank r makes as collective idx: its bytes only if it brings some. */
static struct coll_call call_of(int r, uint32_t idx, const int64_t *data)
{
    const struct coll_spec *c = spec_of(r, idx);
    struct coll_call call = spec_call(c, idx);
    call.data = data;
    if (c->kind == DSM_COLL_BARRIER || (c->kind == DSM_COLL_BCAST && c->root != r))
        call.len = 0;
    return call;
}

/* Can rank r go on with its two-level collective idx (arrived)?  A leader
 * once every rank of its host arrived, the others once it handed it out. */
static int level_open(int r, uint32_t idx)
{
    int h = W.s.host[r];
    return leader_of(r) == r ? W.level[h].arrived[idx] == W.s.nlocal[h]
                             : W.level[h].handed > (int)idx;
}

/* The leader's call among the leaders for collective idx, with its host's
 * identities and bytes (in th), as hostcoll.c's first level gives them. */
static void level_begin(int r, struct thread *th, uint32_t idx)
{
    int h = W.s.host[r], i, q;
    struct coll_call mine = call_of(r, idx, th->mine), c;
    struct coll_sig sig;
    struct coll_seed *d = &th->level_seed;
    uint64_t at = 0;
    uint32_t tag[2];
    int64_t v[4];
    contribution(r, idx, th->mine);
    for (i = 0; i < W.s.nlocal[h]; i++) {
        q = W.s.locals[h][i];
        c = call_of(q, idx, NULL);
        sig = coll_identity(&c);
        if (!i || coll_sig_cmp(&sig, &d->lo) < 0)
            d->lo = sig, d->lo_rank = q;
        if (!i || coll_sig_cmp(&sig, &d->hi) > 0)
            d->hi = sig, d->hi_rank = q;
        contribution(q, idx, v);
        if (among_all(q, idx))
            c.len = 0;                  /* it brings nothing */
        tag[0] = (uint32_t)q, tag[1] = (uint32_t)c.len;
        memcpy(th->level_in + at, tag, 8);
        memcpy(th->level_in + at + 8, v, c.len);
        at += 8 + c.len;
    }
    th->level_call = mine;
    th->op = (struct op){ .kind = OP_COLL, .bare = 1, .err = th->err,
                          .call = { .kind = mine.kind != DSM_COLL_REDUCE ? mine.kind
                                          : among_all(r, idx) ? DSM_COLL_BARRIER
                                                              : DSM_COLL_GATHER,
                                    .root = mine.root, .before = &th->level_call,
                                    .leaders = 1, .seed = d } };
    if (mine.kind != DSM_COLL_BARRIER && mine.root != DSM_ROOT_ALL)
        th->op.call.root = leader_of(mine.root);
    if (mine.kind == DSM_COLL_BCAST && leader_of(mine.root) == r) {
        contribution(mine.root, idx, th->mine);
        th->op.call.data = th->mine;
        th->op.call.len = 16;
    } else if (th->op.call.kind == DSM_COLL_GATHER) {
        th->op.call.data = th->level_in;
        th->op.call.len = at;
    }
    th->in_op = 1;
}

/* The leader's collective among the leaders ended (rc): its outcome for
 * the host's ranks, the hosts' entries flattened. */
static void level_hand_out(int r, const struct thread *th, uint32_t idx, int rc)
{
    int h = W.s.host[r];
    const struct op *op = &th->op;
    const unsigned char *got = op->out;
    uint64_t at, len = 0;
    uint32_t tag[2];
    W.level[h].rc = rc;
    memcpy(W.level[h].err, th->err, sizeof th->err);
    free(W.level[h].bytes);
    W.level[h].bytes = malloc(op->out_len + 16 + 1);
    if (!rc && op->call.kind == DSM_COLL_BCAST && !got && op->call.data) {
        memcpy(W.level[h].bytes, op->call.data, 16);    /* the root's host */
        len = 16;
    } else if (!rc && op->call.kind == DSM_COLL_GATHER) {
        for (at = 0; got && at < op->out_len; at += 8 + tag[1]) {
            memcpy(tag, got + at, 8);
            memcpy(W.level[h].bytes + len, got + at + 8, tag[1]);
            len += tag[1];
        }
    } else if (!rc && got) {
        memcpy(W.level[h].bytes, got, op->out_len);
        len = op->out_len;
    }
    W.level[h].len = len;
    W.level[h].handed = (int)idx + 1;
}

/* Rank r's result of collective idx from its host's outcome, checked. */
static void level_result(int r, uint32_t idx, const struct task *o)
{
    const struct coll_spec *c = spec_of(r, idx);
    int h = W.s.host[r];
    const unsigned char *b = W.level[h].bytes;
    int gets = c->kind == DSM_COLL_BCAST ? r != c->root
             : c->kind != DSM_COLL_BARRIER && (c->root == DSM_ROOT_ALL || c->root == r);
    int64_t sum[4] = { 0, 0, 0, 0 }, v[4];
    uint64_t at, len = spec_call(c, idx).len;
    int i, words = (int)(len / 8);
    if (mismatched(o)) {
        check_mismatch(r, W.level[h].rc, W.level[h].err);
        return;
    }
    if (W.level[h].rc) {
        sim_violation(&W.s, "rank %d: collective %u: %s", r, idx, W.level[h].err);
        return;
    }
    if (!gets || c->kind != DSM_COLL_REDUCE) {
        check_coll(r, idx, gets ? b : NULL, W.level[h].len);
        return;
    }
    for (at = 0; at + 8 + len <= W.level[h].len; at += 8 + len) {  /* as hostcoll.c's result() */
        memcpy(v, b + at + 8, len);
        for (i = 0; i < words; i++)
            sum[i] = c->op == DSM_OP_SUM ? sum[i] + v[i] : !at || v[i] > sum[i] ? v[i] : sum[i];
    }
    check_coll(r, idx, sum, len);
}

/* One step of thread 0's collective task in two levels (core.mu held). */
static void level_step(int r, struct thread *th, const struct task *o)
{
    struct srank *sr = &W.s.r[r];
    int st, leader = leader_of(r) == r;
    if (th->phase == 0) {               /* it arrives in its host's control area */
        W.level[W.s.host[r]].arrived[o->coll]++;
        if (!leader) {
            coll_skip(&sr->coll);
            W.began[r]++;
            th->began = 1;
        }
        th->phase = 1;
        return;
    }
    if (th->phase == 2) {               /* a large reduce among all the ranks */
        if (!op_steps(r, th, o))
            return;
        check_coll(r, o->coll, th->op.out, th->op.out_len);
        free(th->op.out);
        th->op.out = NULL;
        th->colls_done++;
        W.cover.among_all++;
        next_task(th);
        return;
    }
    if (leader) {
        uint64_t epoch = sr->coll.epoch;
        if (!th->in_op)
            level_begin(r, th, o->coll);
        st = op_step(&sr->ops, &th->op);
        if (sr->coll.epoch != epoch && !th->began++)
            W.began[r]++;
        th->asleep = st == OP_WAIT;
        if (st == OP_ERROR && core_failed(&sr->core)) {
            th->ended = 1;
            return;
        }
        if (st != OP_DONE && st != OP_ERROR)
            return;
        level_hand_out(r, th, o->coll, st == OP_ERROR ? th->op.rc : 0);
        free(th->op.out);
        op_end(&th->op);
        th->op.out = NULL;
        th->in_op = 0;
    }
    if (!W.level[W.s.host[r]].rc && !mismatched(o) && among_all(r, o->coll)) {
        th->phase = 2;                  /* every rank called it: now among all */
        return;
    }
    level_result(r, o->coll, o);
    th->colls_done++;
    next_task(th);
}

/* ---------------------------------------------------------- application steps */

int thread_done(const struct thread *th)
{
    return th->ended || th->pc == th->ntasks;
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

/* Is collective k a point where the whole rank synchronises: every one
 * in release mode, a placement in sequential mode? */
static int rank_wide(uint32_t k)
{
    return W.release || W.colls[k].kind == COLL_PLACE;
}

/* A collective that synchronises the whole rank: thread 0 begins
 * collective k once thread 1 is past the ops before it; thread 1 begins
 * its ops after collective k once thread 0 has ended it. */
static int phase_open(int r, int t, const struct task *o)
{
    const struct thread *other = &W.th[r][1 - t];
    int k;
    if (W.nthreads < 2 || (t == 0 && (o->kind != T_COLL || o->coll >= MAX_COLLS + 1)))
        return 1;
    if (t == 0)
        return !rank_wide(o->coll) || thread_done(other) ||
               other->tasks[other->pc].phase > (int)o->coll;
    for (k = o->phase - 1; k >= 0 && !rank_wide((uint32_t)k); k--)
        ;
    return k < other->colls_done;
}

/* Can this thread's next step change something?  A thread whose last
 * step waited sleeps until a core_wake moves the event count, as
 * core_sleep does. */
int thread_ready(int r, int t)
{
    struct thread *th = &W.th[r][t];
    struct srank *sr = &W.s.r[r];
    const struct task *o = &th->tasks[th->pc];
    if (sr->dead || thread_done(th))
        return 0;
    if (core_failed(&sr->core))
        return 1;               /* it wakes to the failure */
    if (two_level(r, o) && th->phase == 1 && !th->in_op)
        return level_open(r, o->coll);
    if (th->asleep && core_seq(&sr->core) == th->seq)
        return 0;               /* nobody woke it */
    if (!phase_open(r, t, o))
        return 0;
    return o->kind != T_FINALIZE || th->phase || threads_done(r, 1);
}

/* A read: the last write, or in release mode, for a word another rank may
 * be writing now (a race), some value written to that word before now. */
static void check_read(int r, const struct task *o, uint32_t page, uint32_t word)
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


/* The operation task o begins with (ops.h), at its phase 0. */
static void begin_op(int r, struct thread *th, const struct task *o)
{
    const struct coll_spec *c = spec_of(r, o->coll);
    struct op *op = &th->op;
    *op = (struct op){ .err = th->err };
    switch (o->kind) {
    case T_READ:
    case T_WRITE:
        op->kind = OP_FAULT;
        op->f = (struct fetch){ .first = o->page, .write = o->kind == T_WRITE };
        break;
    case T_LOCK_INC:
        op->kind = th->phase == 0 ? OP_LOCK : th->phase == 1 ? OP_FAULT : OP_UNLOCK;
        op->lock = o->lock;
        op->f = (struct fetch){ .first = counter_page(o->lock), .write = 1 };
        break;
    case T_PIN:
        op->kind = th->phase ? OP_UNPIN : OP_FETCH;
        op->f = (struct fetch){ .first = o->page, .end = o->page + o->count,
                                .write = (int)o->write, .pin = 1, .at = o->page };
        break;
    case T_PREFETCH:
        op->kind = OP_FETCH;
        op->f = (struct fetch){ .first = o->page, .end = o->page + o->count,
                                .write = (int)o->write, .at = o->page };
        break;
    case T_FINALIZE:
        op->kind = OP_FINALIZE;
        break;
    default:
        if (c->kind == COLL_PLACE) {
            *op = (struct op){ .kind = OP_PLACE, .first = c->first, .n = c->n,
                               .homes = c->homes, .err = th->err,
                               .call = spec_call(c, o->coll) };
            break;
        }
        contribution(r, o->coll, th->mine);
        op->kind = OP_COLL;
        op->call = spec_call(c, o->coll);
        op->call.data = th->mine;
        if (c->kind == DSM_COLL_BARRIER || (c->kind == DSM_COLL_BCAST && c->root != r))
            op->call.len = 0;
    }
    th->in_op = 1;
}

/* Is task o the collective some ranks call differently (--mismatch)? */
static int mismatched(const struct task *o)
{
    return o->kind == T_COLL && (int)o->coll == W.odd_at;
}

/* One step of the thread's operation, as api.c's run() makes it; 1 once
 * it is done, or once the mismatched collective failed (op.rc).  The
 * job's failure ends the thread; any other error is a violation. */
static int op_steps(int r, struct thread *th, const struct task *o)
{
    struct srank *sr = &W.s.r[r];
    uint64_t epoch = sr->coll.epoch;
    int st;
    if (!th->in_op)
        begin_op(r, th, o);
    st = op_step(&sr->ops, &th->op);
    if (o->kind == T_COLL && sr->coll.epoch != epoch && !th->began++)
        W.began[r]++;               /* its first collective began */
    if (o->kind == T_PIN)
        th->upto = (uint32_t)(th->op.f.at - o->page);
    th->asleep = st == OP_WAIT;
    if (st == OP_ERROR && core_failed(&sr->core))
        th->ended = 1;
    else if (st == OP_ERROR && !mismatched(o))
        sim_violation(&W.s, "rank %d: %s: %s", r, task_names[o->kind], th->err);
    if (st == OP_DONE || st == OP_ERROR) {
        op_end(&th->op);
        th->in_op = 0;
    }
    return st == OP_DONE || (st == OP_ERROR && !th->ended && mismatched(o));
}

/* The task is over: the next one begins at its phase 0. */
static void next_task(struct thread *th)
{
    th->phase = 0;
    th->upto = 0;
    th->began = 0;
    th->pc++;
}

/* A lock-protected increment: acquire, the fault on the counter's page
 * and the increment, release. */
static void lock_inc(int r, struct thread *th, const struct task *o)
{
    uint32_t cp = counter_page(o->lock), cw = counter_word(o->lock);
    if (!op_steps(r, th, o))
        return;
    if (th->phase == 1) {
        check_read(r, NULL, cp, cw);
        do_write(r, cp, cw, *word_at(W.shadow, cp, cw) + 1);
    }
    if (th->phase++ == 2)
        next_task(th);
}

/* A pin task: phase 0 fetches and pins the pages in ascending order (the
 * op); phase 1 holds them all (reads, or writes, each page); phase 2
 * unpins them (the op). */
static void pin_task(int r, struct thread *th, const struct task *o)
{
    uint32_t p;
    if (th->phase == 1) {
        for (p = o->page; p < o->page + o->count; p++)
            if (o->write)
                do_write(r, p, o->word, ++W.writes);
            else
                check_read(r, o, p, o->word);
        th->phase = 2;
    } else if (op_steps(r, th, o) && th->phase++) {
        next_task(th);
    }
}

void app_step(int r, int t)
{
    struct thread *th = &W.th[r][t];
    struct srank *sr = &W.s.r[r];
    const struct task *o = &th->tasks[th->pc];
    uint32_t seq = core_seq(&sr->core);     /* as run() and coh_fault: before the step */
    step_log("rank %d thread %d: %s page %u word %u lock %u (phase %d)", r, t,
             task_names[o->kind], o->page, o->word, o->lock, th->phase);
    core_lock(&sr->core);
    th->asleep = 0;
    if (core_failed(&sr->core)) {
        th->ended = 1;
    } else if (o->kind == T_READ || o->kind == T_WRITE) {
        if (op_steps(r, th, o)) {
            if (o->kind == T_READ)
                check_read(r, o, o->page, o->word);
            else
                do_write(r, o->page, o->word, ++W.writes);
            th->pc++;
        }
    } else if (o->kind == T_LOCK_INC) {
        lock_inc(r, th, o);
    } else if (o->kind == T_PIN) {
        pin_task(r, th, o);
    } else if (two_level(r, o)) {
        level_step(r, th, o);
    } else if (op_steps(r, th, o)) {        /* a collective, a placement, a prefetch, finalize */
        if (mismatched(o))
            check_mismatch(r, th->op.rc, th->err);
        else if (o->kind == T_COLL)
            check_coll(r, o->coll, th->op.out, th->op.out_len);
        th->colls_done += o->kind == T_COLL;
        free(th->op.out);
        th->op.out = NULL;
        next_task(th);
    }
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
