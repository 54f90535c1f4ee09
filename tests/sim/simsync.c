/* A second simulation, of what libdsm.sync adds to the protocols: lock
 * tries (DSM_LOCK_TRY, answered by a grant or DSM_LOCK_BUSY), acquires
 * that time out (the request is abandoned, and its grant handed on when
 * it comes), and the counted mailbox (DSM_POST).  The real locks.c and
 * mbox.c run on simnet.c's channels, driven by one seeded random
 * scheduler, as in sim.c.  Each thread of each rank makes INCS increments,
 * each under a random lock, asked for in a random way (wait, try until
 * granted, or give up at random and ask again), and posts one wake-up to
 * a random (rank, key) after each.  The rules:
 *   after every step  a lock has at most one holder; a try was not queued;
 *   at the end        every increment was made (no request was lost,
 *                     abandoned or not), every lock is free everywhere
 *                     with nothing abandoned, and each mailbox holds
 *                     exactly the posts sent to it.
 *
 *   build/simsync --seeds A:B     run seeds A .. B-1
 *   build/simsync --seed N        one seed, printing its steps */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"

#define THREADS 2
#define INCS 6
#define KEYS 3
#define STEPS 200000

enum variant { V_WAIT, V_TRY, V_TIMED };
enum phase { P_ASK, P_WAIT, P_GIVE, P_POST, P_DONE };
static const char *variants[] = { "waits for lock %u", "tries lock %u",
                                  "may give up on lock %u" };

struct sthread {
    enum phase phase;
    enum variant variant;
    uint32_t lock, seq;             /* P_WAIT: the request it waits for */
    int left;
};

static struct {
    struct sim s;
    struct sthread th[SIM_MAX_RANKS][THREADS];
    uint64_t rng;
    uint32_t nlocks;
    int nthreads, tracing;
    uint64_t incs, posts[SIM_MAX_RANKS][KEYS];
    uint64_t tries_busy, abandoned;     /* coverage, over all seeds */
} Z;

static uint64_t pick(uint64_t n)
{
    Z.rng ^= Z.rng << 13;
    Z.rng ^= Z.rng >> 7;
    Z.rng ^= Z.rng << 17;
    return Z.rng % n;
}

/* What simnet.c asks of its driver (sim.h).  Here a thread's step runs
 * whole: no other thread of its rank runs where it drops core.mu (the
 * main simulator, sim.c, interleaves those). */
uint64_t below(uint64_t n)
{
    return pick(n);
}

void sim_yield(int r)
{
    (void)r;
}

void step_log(const char *fmt, ...)
{
    va_list ap;
    if (!Z.tracing)
        return;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static void say(const char *fmt, int r, int t, uint32_t lock)
{
    if (Z.tracing) {
        printf("rank %d thread %d: ", r, t);
        printf(fmt, lock);
        printf("\n");
    }
}

/* ---------------------------------------------------------- threads */

/* Can thread t of rank r make progress now? */
static int ready(int r, int t)
{
    struct sthread *th = &Z.th[r][t];
    struct locks *l = &Z.s.r[r].locks;
    if (th->phase != P_WAIT)
        return th->phase != P_DONE;
    return locks_held_by(l, th->lock, th->seq) || th->variant == V_TIMED ||
           (th->variant == V_TRY && locks_busy(l, th->lock, th->seq));
}

/* One step of the thread (holding core.mu, as the real calls do). */
static void step(int r, int t)
{
    struct sthread *th = &Z.th[r][t];
    struct srank *sr = &Z.s.r[r];
    char err[DSM_ERRLEN] = "";
    int rc = 0, dst, key;
    if (th->phase == P_ASK) {
        th->lock = (uint32_t)pick(Z.nlocks);
        th->variant = (enum variant)pick(3);
        rc = th->variant == V_TRY ? locks_try(&sr->locks, th->lock, err)
                                  : locks_ask(&sr->locks, th->lock, err);
        if (!rc) {
            say(variants[th->variant], r, t, th->lock);
            th->seq = locks_seq(&sr->locks, th->lock);
            th->phase = P_WAIT;
        }
    } else if (th->phase == P_WAIT) {
        if (locks_held_by(&sr->locks, th->lock, th->seq)) {
            say("holds lock %u", r, t, th->lock);
            Z.incs++;
            th->phase = P_GIVE;
        } else if (th->variant == V_TRY && locks_busy(&sr->locks, th->lock, th->seq)) {
            say("found lock %u busy", r, t, th->lock);
            Z.tries_busy++;
            th->phase = P_ASK;
        } else if (th->variant == V_TIMED) {
            say("gives up on lock %u", r, t, th->lock);
            locks_abandon(&sr->locks, th->lock);
            Z.abandoned++;
            th->phase = P_ASK;
        }
    } else if (th->phase == P_GIVE) {
        if (!(rc = locks_give(&sr->locks, th->lock, (struct lock_value){ NULL, 0 }, err))) {
            say("gave lock %u back", r, t, th->lock);
            th->left--;
            th->phase = P_POST;
        }
    } else if (th->phase == P_POST) {
        dst = (int)pick((uint64_t)Z.s.n);
        key = (int)pick(KEYS);
        if (!(rc = mbox_send(&sr->locks.mbox, dst, (uint64_t)key, err))) {
            Z.posts[dst][key]++;
            th->phase = th->left ? P_ASK : P_DONE;
        }
    }
    if (rc && rc != TP_FULL)
        sim_violation(&Z.s, "rank %d thread %d: %s", r, t, err);
}

/* ---------------------------------------------------------- the rules */

static void check_holders(void)
{
    uint32_t k;
    int r, holders;
    for (k = 0; k < Z.nlocks; k++) {
        for (holders = 0, r = 0; r < Z.s.n; r++)
            holders += Z.s.r[r].locks.mine[k].state == LOCK_HELD;
        if (holders > 1)
            sim_violation(&Z.s, "lock %u has %d holders", k, holders);
    }
}

static void check_finish(void)
{
    uint64_t want = (uint64_t)Z.s.n * (uint64_t)Z.nthreads * INCS, got;
    uint32_t k;
    int r, key;
    if (Z.incs != want)
        sim_violation(&Z.s, "%llu increments made, %llu asked for", (unsigned long long)Z.incs,
                      (unsigned long long)want);
    for (r = 0; r < Z.s.n; r++) {
        struct locks *l = &Z.s.r[r].locks;
        for (k = 0; k < Z.nlocks; k++)
            if (l->mine[k].state != LOCK_FREE || l->mine[k].abandoned ||
                (k % (uint32_t)Z.s.n == (uint32_t)r && l->tails[k / (uint32_t)Z.s.n].rank >= 0))
                sim_violation(&Z.s, "lock %u is not free at the end on rank %d", k, r);
        for (key = 0; key < KEYS; key++) {
            for (got = 0; mbox_take_one(&l->mbox, (uint64_t)key); got++)
                ;
            if (got != Z.posts[r][key])
                sim_violation(&Z.s, "rank %d got %llu posts for key %d, %llu were sent", r,
                              (unsigned long long)got, key,
                              (unsigned long long)Z.posts[r][key]);
        }
    }
}

/* ---------------------------------------------------------- scheduling */

/* A try never queues: a grant for one comes from the lock's home, never
 * from a holder handing it on.  (Checked as messages are delivered.) */
static void observe_grant(struct sim *s, int dst, const struct msg *m)
{
    int t;
    if (m->type != DSM_LOCK_GRANT || m->from == (int)(m->lk.lock % (uint32_t)s->n))
        return;
    for (t = 0; t < Z.nthreads; t++) {
        struct sthread *th = &Z.th[dst][t];
        if (th->phase == P_WAIT && th->variant == V_TRY && th->lock == m->lk.lock &&
            th->seq == locks_seq(&s->r[dst].locks, th->lock))
            sim_violation(s, "rank %d tried lock %u, and was queued: rank %d handed it on",
                          dst, th->lock, m->from);
    }
}

/* Pick an enabled action and run it: a thread's step, a delivery on a
 * channel, a ring drained.  0 when nothing is enabled. */
static int act(void)
{
    int cand[SIM_MAX_RANKS * (THREADS + SIM_MAX_RANKS + 1)][3], n = 0, r, q, i;
    for (r = 0; r < Z.s.n; r++) {
        for (q = 0; q < Z.nthreads; q++)
            if (ready(r, q))
                cand[n][0] = 0, cand[n][1] = r, cand[n++][2] = q;
        for (q = 0; q < Z.s.n; q++)
            if (Z.s.ch[r][q].head)
                cand[n][0] = 1, cand[n][1] = r, cand[n++][2] = q;
        if (Z.s.r[r].tp.ring.len)
            cand[n][0] = 2, cand[n][1] = r, cand[n++][2] = 0;
    }
    if (!n)
        return 0;
    i = (int)pick((uint64_t)n);
    r = cand[i][1];
    if (cand[i][0] == 0) {
        core_lock(&Z.s.r[r].core);
        step(r, cand[i][2]);
        core_unlock(&Z.s.r[r].core);
    } else if (cand[i][0] == 1) {
        simnet_deliver(&Z.s, r, cand[i][2], 1, 1, observe_grant);
    } else {
        simnet_drain_ring(&Z.s.r[r]);
    }
    return 1;
}

static int run(uint64_t seed)
{
    int r, t, steps;
    memset(&Z.s, 0, sizeof Z.s);
    memset(Z.th, 0, sizeof Z.th);
    memset(Z.posts, 0, sizeof Z.posts);
    Z.incs = 0;
    Z.rng = seed * 2654435761u + 88172645463325252ull;
    Z.s.n = 2 + (int)pick(SIM_MAX_RANKS - 1);
    Z.nlocks = 1 + (uint32_t)pick(MAX_LOCKS);
    Z.nthreads = 1 + (int)pick(THREADS);
    for (r = 0; r < Z.s.n; r++) {
        if (simnet_rank_init(&Z.s, r, 1, 1, 1, 0, Z.nlocks, 0))
            return 1;
        for (t = 0; t < Z.nthreads; t++)
            Z.th[r][t].left = INCS;
    }
    for (steps = 0; steps < STEPS && !Z.s.violation[0] && act(); steps++)
        check_holders();
    for (r = 0; r < Z.s.n; r++)
        if (Z.s.r[r].core.failed)
            sim_violation(&Z.s, "rank %d failed: %s", r, Z.s.r[r].core.failure);
    for (r = 0; r < Z.s.n && !Z.s.violation[0]; r++)
        for (t = 0; t < Z.nthreads; t++)
            if (Z.th[r][t].phase != P_DONE)
                sim_violation(&Z.s, "rank %d thread %d asked for lock %u (request %u, "
                              "which it %s) and never got it (step %d)", r, t,
                              Z.th[r][t].lock, Z.th[r][t].seq,
                              Z.th[r][t].variant == V_WAIT ? "waits for" :
                              Z.th[r][t].variant == V_TRY ? "tries" : "may give up on", steps);
    if (!Z.s.violation[0])
        check_finish();
    for (r = 0; r < Z.s.n; r++)
        simnet_rank_free(&Z.s.r[r]);
    free(Z.s.delivered);
    if (Z.s.violation[0])
        printf("FAILED seed %llu: %s\nreplay: build/simsync --seed %llu\n",
               (unsigned long long)seed, Z.s.violation, (unsigned long long)seed);
    return Z.s.violation[0] != 0;
}

int main(int argc, char **argv)
{
    unsigned long long a = 0, b = 1000;
    int failed = 0;
    if (argc == 3 && !strcmp(argv[1], "--seed")) {
        Z.tracing = 1;
        a = strtoull(argv[2], NULL, 10);
        b = a + 1;
    } else if (argc == 3 && !strcmp(argv[1], "--seeds") &&
               sscanf(argv[2], "%llu:%llu", &a, &b) == 2) {
    } else if (argc != 1) {
        fprintf(stderr, "usage: simsync [--seeds A:B | --seed N]\n");
        return 2;
    }
    for (; a < b; a++)
        failed += run(a);
    printf("%s: %llu tries found a lock busy, %llu acquires gave up\n",
           failed ? "FAILED" : "passed", (unsigned long long)Z.tries_busy,
           (unsigned long long)Z.abandoned);
    return failed != 0;
}
