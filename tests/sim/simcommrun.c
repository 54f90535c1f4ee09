/* The simulation of the comm thread: heartbeats, silence verdicts,
 * self-fencing and DSM_WAIT=reply's leader/follower loop, on a simulated
 * clock, with the real decisions of libdsm/csrc/commstep.c (the ones
 * comm.c makes with now_ns() around ppoll) and the real failure record and
 * event count of ground.c.
 *
 * N ranks in one process, each with a comm thread and one or two
 * application threads.  Each application thread sends requests to random
 * peers and waits for each reply as DSM_WAIT=reply does (core_spin with
 * core.poll = app_poll, then core_sleep): it joins the leaders
 * (lead_join), polls the peers itself while it holds loop_mu, leaves
 * (lead_leave) and sleeps on the event count.  A request is answered by
 * whoever reads it: the peer's comm thread, or one of its polling threads.
 * The comm thread's round is comm.c's round_of_events: decide whether to
 * watch the peers (lead_watch), wait (live_wait_ns; woken by a wake-up, a
 * message on a watched peer, or the timeout, late by a random scheduling
 * delay), then receive, run the heartbeat duty (live_duty), finalize, and
 * fence (live_fence).  Messages take a random time to arrive; each channel
 * stays FIFO.  One seeded scheduler picks every step; each step costs a
 * little simulated time, and when nothing can run the clock jumps to the
 * next event.
 *
 * Faults, one rank per seed at most, at a random time: silent (stopped:
 * sockets open, nothing sent), dead (closed: the peers read an end of
 * stream), or reset at a random send to it (that send fails at the
 * sender, as ECONNRESET does).  Another rank may be slow but alive: its
 * comm thread wakes late and its messages take long, within the bound
 * the heartbeats are built for (lateness + latency < heartbeat_ns / 2).
 * A failed rank's program ends after a while, or is stuck (then the comm
 * thread must fence it).
 *
 * After every step it checks:
 *   - while a thread waits for a reply, the loop has exactly one leader:
 *     the comm thread watches the peers, or a thread polls them, or a
 *     wake-up that hands them over is on its way;
 *   - a reply that came, or a failure, wakes every waiting thread;
 *   - nothing hangs: some step is possible while a thread waits;
 *   - a live peer (heartbeats flowing) is never declared dead, a silent
 *     one is within heartbeat_ns + one round (plus the observer's own
 *     lateness), and a failure blames the faulty rank or a rank that
 *     failed before;
 *   - a failed rank ends within the fence time plus one round;
 *   - with no fault, every request is answered and every rank finalizes.
 *
 *   simcomm --seeds A:B     run seeds A..B-1; the first failure prints its seed and trace
 *   simcomm --seed N        replay one seed, tracing every step */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "simcomm.h"

struct world S;
static const char *fates[] = { "none", "silent", "dead", "reset" };

/* ---------------------------------------------------------- the scheduler */

enum akind { ACT_APP, ACT_COMM, ACT_FINALIZE, ACT_EXIT, ACT_FAULT };
struct action {
    enum akind kind;
    int r, t;
};

static int app_ready(const struct srank *sr, const struct sapp *a)
{
    if (a->state == A_THINK)
        return S.now >= a->until;
    if (a->state == A_SLEEP)
        return core_seq(&sr->core) != a->wseq;
    return a->state != A_DONE;
}

/* The steps possible now into acts; *next: when the next one becomes
 * possible, if none is now. */
static int enabled(struct action *acts, uint64_t *next)
{
    int r, t, n = 0;
    *next = NONE;
    if (S.fate != F_NONE && S.fate != F_RESET && !gone(S.faulty)) {
        if (S.now >= S.fault_at)
            acts[n++] = (struct action){ ACT_FAULT, S.faulty, 0 };
        else if (S.fault_at < *next)
            *next = S.fault_at;
    }
    for (r = 0; r < S.n; r++) {
        struct srank *sr = &S.r[r];
        uint64_t at;
        if (gone(r))
            continue;
        for (t = 0; t < sr->nthreads; t++) {
            if (app_ready(sr, &sr->app[t]))
                acts[n++] = (struct action){ ACT_APP, r, t };
            else if (sr->app[t].state == A_THINK && sr->app[t].until < *next)
                *next = sr->app[t].until;
        }
        if (sr->loop_holder < 0 && (at = comm_ready_at(r)) != NONE) {
            if (at <= S.now)
                acts[n++] = (struct action){ ACT_COMM, r, 0 };
            else if (at < *next)
                *next = at;
        }
        if (!threads_done(sr))
            continue;
        if (!core_failed(&sr->core) && !sr->self_finalized)
            acts[n++] = (struct action){ ACT_FINALIZE, r, 0 };
        if (core_failed(&sr->core) && !sr->stuck) {
            if (S.now >= sr->exit_at)
                acts[n++] = (struct action){ ACT_EXIT, r, 0 };
            else if (sr->exit_at < *next)
                *next = sr->exit_at;
        }
    }
    return n;
}

static void act(const struct action *a)
{
    switch (a->kind) {
    case ACT_APP:
        app_step(a->r, a->t);
        break;
    case ACT_COMM:
        say("rank %d comm thread: a round (%s)", a->r, S.r[a->r].watch ? "watching" : "led");
        comm_round(a->r);
        break;
    case ACT_FINALIZE:
        finalize(a->r);
        break;
    case ACT_EXIT:
        end_rank(a->r, "its program ended after the failure");
        break;
    case ACT_FAULT:
        if (S.fate == F_SILENT) {
            say("rank %d stops (silent)", a->r);
            S.r[a->r].stopped = 1;
        } else {
            end_rank(a->r, "killed");
        }
        break;
    }
}

/* ---------------------------------------------------------- the rules */

/* A failure just recorded on rank r: does it blame the right rank? */
static void check_blame(int r)
{
    struct srank *sr = &S.r[r];
    int q = sr->core.failed_peer;
    if (q < 0 || q == r) {
        violate("rank %d failed blaming no peer: %s", r, sr->core.failure);
    } else if (sr->silent_verdict && !gone(q)) {
        violate("rank %d declared live rank %d dead (heartbeats were flowing): %s", r, q,
                sr->core.failure);
    } else if (!(S.fate != F_NONE && q == S.faulty) &&
               !(core_failed(&S.r[q].core) && S.r[q].ended)) {
        violate("rank %d blamed rank %d, which neither failed nor was the faulty rank %d: %s",
                r, q, S.faulty, sr->core.failure);
    }
}

static void check_rank(int r, int *seen)
{
    struct srank *sr = &S.r[r];
    int t, pollers = 0, waits = 0, failed = core_failed(&sr->core);
    if (failed && !*seen) {
        *seen = 1;
        check_blame(r);
    }
    for (t = 0; t < sr->nthreads; t++) {
        struct sapp *a = &sr->app[t];
        pollers += a->state == A_POLL || a->state == A_HOLD;
        waits += waiting(a);
        if (a->state == A_SLEEP && (a->got == a->seq || failed) &&
            core_seq(&sr->core) == a->wseq)
            violate("rank %d thread %d sleeps though %s (lost wake-up)", r, t,
                    failed ? "the job failed" : "its reply came");
    }
    if (pollers != sr->lead.pollers)
        violate("rank %d: %d threads poll, lead.pollers says %d", r, pollers, sr->lead.pollers);
    if (waits && !sr->tokens && !sr->lead.pollers && !sr->watch)
        violate("rank %d: a thread waits for a reply and nobody leads the loop (no thread polls "
                "the peers, the comm thread does not watch them, no wake-up is on its way)", r);
    if (waits && !sr->tokens && sr->lead.pollers && sr->watch)
        violate("rank %d: two leaders (a thread polls the peers and the comm thread watches "
                "them, not told to leave them)", r);
    if (S.fate == F_SILENT && S.r[S.faulty].stopped && !failed &&
        S.now > S.fault_at + SLOW_LAT + HB + TICK + 2 * late_max(r))
        violate("rank %d has not declared silent rank %d dead %.0f us after it stopped", r,
                S.faulty, (double)(S.now - S.fault_at) / 1e3);
    if (failed && S.now > sr->failed_at + FENCE + TICK + 2 * late_max(r) + STEP)
        violate("rank %d failed %.0f us ago and still runs (no fence)", r,
                (double)(S.now - sr->failed_at) / 1e3);
}

static void check_end(void)
{
    int r, t;
    for (r = 0; r < S.n; r++) {
        struct srank *sr = &S.r[r];
        if (S.fate == F_NONE && !sr->clean)
            violate("no fault, yet rank %d did not finalize: %s", r,
                    core_failed(&sr->core) ? sr->core.failure : "");
        for (t = 0; S.fate == F_NONE && t < sr->nthreads; t++)
            if (sr->app[t].left)
                violate("rank %d thread %d: %d requests unanswered", r, t, sr->app[t].left);
        if (!gone(r))
            violate("rank %d never ended", r);
    }
}

/* ---------------------------------------------------------- one seed */

static void setup(uint64_t seed)
{
    int r, t, q;
    for (r = 0; r < MAXR; r++)
        for (q = 0; q < MAXR; q++)
            while (S.head[r][q]) {
                struct smsg *m = S.head[r][q];
                S.head[r][q] = m->next;
                free(m);
            }
    memset(&S.r, 0, sizeof S.r);
    memset(S.tail, 0, sizeof S.tail);
    S.rng = seed * 2654435761ULL + 88172645463325252ULL;
    S.now = 0;
    S.violation[0] = 0;
    S.n = 2 + (int)below(MAXR - 1);
    S.fate = (enum fate)below(4);
    S.faulty = (int)below((uint64_t)S.n);
    S.fault_at = below(4 * HB);
    S.resets_left = 1 + (int)below(8);
    if (below(2))
        S.r[below((uint64_t)S.n)].slow = 1;
    S.loaded = !below(4);
    for (r = 0; r < S.n; r++) {
        struct srank *sr = &S.r[r];
        core_init(&sr->core);
        sr->core.rank = r;
        sr->core.nranks = S.n;
        sr->core.clock = sim_clock;
        sr->core.heartbeat_ns = HB;
        sr->core.spin_ns = SPIN;
        live_init(&sr->live, HB, FENCE, 0);
        sr->loop_holder = -1;
        sr->nthreads = 1 + (int)below(MAXT);
        for (t = 0; t < sr->nthreads; t++)
            sr->app[t] = (struct sapp){ .state = A_THINK, .left = REQS, .until = below(HB) };
        comm_wait(r);
    }
    say("%d ranks, fault %s of rank %d at %.0f us%s", S.n, fates[S.fate], S.faulty,
        (double)S.fault_at / 1e3, S.loaded ? ", a loaded machine" : "");
}

/* One seed: 0 if every rule held. */
static int run(uint64_t seed)
{
    static struct action acts[MAXR * (MAXT + 3) + 1];
    int seen[MAXR] = { 0 }, n, r, step;
    uint64_t next;
    setup(seed);
    for (step = 0; step < MAX_STEPS && !S.violation[0]; step++) {
        for (r = 0; r < S.n; r++)
            if (!gone(r))
                check_rank(r, &seen[r]);
        if (S.violation[0])
            break;
        if (!(n = enabled(acts, &next))) {
            if (next == NONE)
                break;
            S.now = next;
            continue;
        }
        act(&acts[below((uint64_t)n)]);
        S.now += below(STEP);
    }
    if (!S.violation[0] && step == MAX_STEPS)
        violate("no end after %d steps", MAX_STEPS);
    if (!S.violation[0])
        check_end();
    for (r = 0; r < S.n; r++)
        pthread_mutex_destroy(&S.r[r].core.mu);
    return !!S.violation[0];
}

int main(int argc, char **argv)
{
    uint64_t a = 0, b = 1000, seed;
    int one = 0;
    if (argc == 3 && !strcmp(argv[1], "--seed")) {
        a = strtoull(argv[2], NULL, 10);
        b = a + 1;
        one = S.tracing = 1;
    } else if (argc == 3 && !strcmp(argv[1], "--seeds") && strchr(argv[2], ':')) {
        a = strtoull(argv[2], NULL, 10);
        b = strtoull(strchr(argv[2], ':') + 1, NULL, 10);
    } else {
        fprintf(stderr, "usage: simcomm --seeds A:B | --seed N\n");
        return 2;
    }
    for (seed = a; seed < b; seed++) {
        if (!run(seed))
            continue;
        printf("seed %llu: %s\n", (unsigned long long)seed, S.violation);
        if (!one) {
            printf("replay: build/simcomm --seed %llu\n", (unsigned long long)seed);
            return 1;
        }
    }
    if (one && !S.violation[0])
        printf("seed %llu passed\n", (unsigned long long)a);
    if (one)
        return !!S.violation[0];
    printf("passed %llu seeds: %llu silence verdicts, %llu fences, %llu hand-backs, "
           "%llu replies taken by a polling thread\n", (unsigned long long)(b - a),
           (unsigned long long)S.verdicts, (unsigned long long)S.fences,
           (unsigned long long)S.handovers, (unsigned long long)S.polled_replies);
    return 0;
}

