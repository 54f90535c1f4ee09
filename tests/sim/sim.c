/* Deterministic simulation of the protocol layers, after FoundationDB's
 * simulation testing and TigerBeetle's VOPR.
 *
 * N simulated ranks run the real coherence and sync code (libdsm/csrc) in
 * one process over simnet.c's per-pair FIFO channels.  One seeded random
 * scheduler picks, at every step, one of: an application thread's next
 * step (a read, a write, a lock-protected increment, a collective, finalize),
 * the delivery of the next messages on a channel, the drain of a rank's
 * ring, or a held-back (deferred) message.  Threads, not only messages:
 * wherever the running thread drops core.mu (a send, a protect, a
 * populate: sim_yield), whole steps of its rank's other threads may run
 * before it goes on (the comm thread's work, the other application
 * threads), and a thread whose step went nowhere sleeps on the event count
 * (core_sleep) until a core_wake, so a lost wake-up is a hang.  The lock
 * order is checked at every take (-DDSM_LOCKCHECK).  After every step it
 * checks:
 *   - at most one writable copy of a page, and none beside read copies;
 *   - every copy's data is the last write (a shadow memory), and every read
 *     returns it: sequential consistency;
 *   - the home's copyset and owner match the protections;
 *   - a lock has at most one holder, granted in the order its home got
 *     the requests (FIFO), whether the home or the last holder hands it on;
 *   - a collective ends on no rank before every rank began it, and gives
 *     every rank that should get one the right result;
 *   - no message is delivered twice, and at the end none is left or lost;
 *   - nothing hangs: while work is left, some step is possible.
 * The ring holds DSM_RING_CAP = 2 messages here, so the ring-full path
 * runs all the time.
 *
 *   sim --seeds A:B [--release] [--mismatch] [--hosts] [--drop] [--corrupt]
 *                    run seeds A..B-1; the first failure prints its seed and trace
 *   sim --seed N [--release] [--mismatch] [--hosts] [--drop] [--corrupt]
 *                    replay one seed, tracing every step
 *
 * --hosts groups 4 to 6 ranks into 2 or more hosts of consecutive ranks,
 * one of them at least with ranks beyond the bits of a page's word (the
 * simulator builds with DSM_HOST_RANK_BITS=1: a host's rank 1 has its bit,
 * those after it share HOST_OVERFLOW; hostmem.h),
 * each host's ranks sharing one memory and its page words, the protocol
 * running between the hosts' leaders (coh_host.c, as DSM_SHARE=host on
 * several hosts; a placement's homes are leaders).  The rules above then
 * speak of a host's copy (what any of its ranks can access), the directory
 * of hosts; within a host, no rank maps a page above its host's word
 * unless the leader is lowering it, and each rank that maps it has its bit
 * (or HOST_OVERFLOW) set, HOST_OVERFLOW being cleared only while a
 * lowering asks every rank beyond the bits.  Once a rank ends a placement,
 * every rank names its new homes.  In sequential mode its collectives have
 * two levels, as hostcoll.c runs them: the leaders alone run coll.c's
 * collective among themselves, and the steps within a host are modelled
 * (simapp.c, "two levels").
 *
 * --release runs release consistency: data-race-free programs (a word has
 * one writer between two collectives; counters change under their lock)
 * must read what sequential consistency would; a racy read may be stale,
 * never a value not yet written to that word; after the last barrier every
 * home holds every last write.  A pin task is a prefetch there.  With --hosts too, twins and dirty pages are
 * the host leaders' alone, within the twin limit (two pages), and a host's
 * copy is writable only while its leader has it dirty with a twin, or
 * homes it and has it dirty or never served it (simcheck.c's
 * check_host_release).
 * --mismatch makes some ranks (not all) call another collective than the
 * others at one point: every rank must fail there with the error naming
 * both calls, none may end it or hang, and the job goes on.
 * --drop kills one rank at a random step: every other rank must then reach
 * the failure (the fail hook), and none may hang; a send to the dead rank
 * fails at the sender half the time, as a reset connection does.  --corrupt flips a byte
 * of one copy, to show the checker catches it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"
#include "hostmem.h"

_Static_assert(SIM_MAX_RANKS >= HOST_RANK_BITS + 4,
               "--hosts: 2 hosts, one with a rank beyond the bits, and a choice of sizes");

#define MAX_STEPS 200000

struct world W;
const char *task_names[] = { "read", "write", "lock-inc", "collective", "finalize", "pin",
                              "prefetch" };

/* ---------------------------------------------------------- helpers */

static uint64_t rnd(void)          /* splitmix64 */
{
    uint64_t z = (W.rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t below(uint64_t n)
{
    return rnd() % n;
}

void step_log(const char *fmt, ...)
{
    char *line = W.trace[W.ntrace++ % TRACE_KEEP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof W.trace[0], fmt, ap);
    va_end(ap);
    if (W.tracing)
        printf("  %s\n", line);
}

uint64_t *word_at(unsigned char *mem, uint32_t page, uint32_t word)
{
    return (uint64_t *)(mem + (uint64_t)page * SIM_PAGE + word * 8);
}

/* ---------------------------------------------------------- the scheduler */

enum act_kind { ACT_APP, ACT_DELIVER, ACT_RING, ACT_DEFERRED, ACT_SETTLE };
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
        if (sr->coh.n_installs || sr->coh.n_serves)
            out[n++] = (struct action){ ACT_SETTLE, r, 0 };
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

/* " page P+N" for a message about pages, for the trace. */
static const char *page_of(const struct sim_msg *m)
{
    static char buf[48];
    int t = m->m.type;
    buf[0] = 0;
    if (!m->eof && (t == DSM_REQ || t == DSM_PAGE || t == DSM_FWD || t == DSM_INV ||
                    t == DSM_UPDATE || t == DSM_DIFF || (t >= DSM_HREQ && t <= DSM_HDONE)))
        snprintf(buf, sizeof buf, " page %llu+%u", (unsigned long long)m->m.pg.page,
                 m->m.pg.count);
    return buf;
}

static void act(const struct action *a)
{
    struct sim *s = &W.s;
    if (!W.nested) {
        W.actor_rank = a->kind == ACT_DELIVER ? a->b : a->a;
        W.actor_thread = a->kind == ACT_APP ? a->b : -1;
    }
    switch (a->kind) {
    case ACT_APP:
        app_step(a->a, a->b);
        break;
    case ACT_DELIVER: {
        const struct sim_msg *m = s->ch[a->a][a->b].head;
        int burst = 1 + (int)below(3);
        step_log("deliver %d -> %d: %s%s (x%d)", a->a, a->b,
                 m->eof ? "end of stream" : msg_name(m->m.type), page_of(m), burst);
        simnet_deliver(s, a->a, a->b, burst, (int)below(2), observe);
        break;
    }
    case ACT_RING: {
        struct srank *sr = &s->r[a->a];
        unsigned i;
        step_log("rank %d drains its ring (%u)", a->a, sr->tp.ring.len);
        for (i = 0; i < sr->tp.ring.len; i++)
            observe(s, a->a, &sr->tp.ring.slot[(sr->tp.ring.head + i) % DSM_RING_CAP].m);
        simnet_drain_ring(sr);
        break;
    }
    case ACT_SETTLE:
        step_log("rank %d settles its batched pages", a->a);
        simnet_settle(&s->r[a->a]);
        break;
    case ACT_DEFERRED:
        step_log("rank %d runs a held-back %s", a->a, msg_name(s->r[a->a].deferred->m.type));
        simnet_fire_deferred(&s->r[a->a]);
        break;
    }
}

uint64_t thread_progress(const struct thread *th)
{
    return (uint64_t)th->pc << 40 ^ (uint64_t)th->phase << 32 ^ (uint64_t)th->upto << 8 ^
           (uint64_t)th->colls_done << 2 ^ (uint64_t)th->ended;
}

/* Is action a another thread of the actor's rank?  The comm thread runs
 * deliveries, the ring, held-back messages and batched pages. */
static int beside_actor(const struct action *a)
{
    if (a->kind == ACT_APP)
        return a->a == W.actor_rank && a->b != W.actor_thread;
    return W.actor_thread >= 0 && (a->kind == ACT_DELIVER ? a->b : a->a) == W.actor_rank;
}

/* The thread that runs dropped core.mu (a send, a protect, a populate):
 * as on a real rank, the rank's other threads may run before it goes on,
 * each a whole step (no deeper nesting).  A thread holding core.mu still
 * (the comm thread sending under it) lets nobody in. */
void sim_yield(int r)
{
    static struct action acts[SIM_MAX_RANKS * (SIM_MAX_THREADS + SIM_MAX_RANKS + 3)];
    int n, i, k, rounds;
    if (W.nested || r != W.actor_rank || lockcheck_held() & 1u << LK_CORE || below(2))
        return;
    W.nested = 1;
    for (rounds = 1 + (int)below(2); rounds > 0; rounds--) {
        n = enabled(acts);
        for (i = k = 0; i < n; i++)
            if (beside_actor(&acts[i]))
                acts[k++] = acts[i];
        if (!k)
            break;
        step_log("meanwhile (rank %d thread %d dropped core.mu):", W.actor_rank, W.actor_thread);
        act(&acts[below((uint64_t)k)]);
        W.cover.nested++;
        check_nested_step();
    }
    W.nested = 0;
}

/* One seed: 0 if every rule held. */
/* --hosts: s->n ranks in 2 or more hosts of consecutive ranks, of sizes
 * drawn so that one has HOST_RANK_BITS + 2 ranks or more: its leader, the
 * ranks with a bit, and one beyond them at least. */
static void draw_hosts(struct sim *s)
{
    int nhosts = 2 + (int)below((uint64_t)s->n - 2 - HOST_RANK_BITS), size[SIM_MAX_RANKS], h;
    int rest = s->n - nhosts - HOST_RANK_BITS - 1;
    for (h = 0; h < nhosts; h++)
        size[h] = 1;
    size[below((uint64_t)nhosts)] += HOST_RANK_BITS + 1;
    while (rest-- > 0)
        size[below((uint64_t)nhosts)]++;
    simnet_hosts(s, nhosts, size, W.npages);
}

static int run(uint64_t seed, int drop, int corrupt)
{
    static struct action acts[SIM_MAX_RANKS * (SIM_MAX_THREADS + SIM_MAX_RANKS + 3)];
    struct sim *s = &W.s;
    uint64_t step, drop_at, corrupt_at, block, readahead, hold;
    int r, n, failed;
    memset(s, 0, sizeof *s);
    W.rng = W.seed = seed;
    W.dropped = -1;
    W.exiting = -1;
    W.ntrace = 0;
    W.writes = 0;
    memset(W.fifo, 0, sizeof W.fifo);
    memset(W.was_held, 0, sizeof W.was_held);
    memset(W.began, 0, sizeof W.began);
    for (r = 0; r < SIM_MAX_RANKS; r++)
        free(W.level[r].bytes);
    memset(W.level, 0, sizeof W.level);
    sim_now = 0;
    s->n = W.hosts ? 3 + HOST_RANK_BITS + (int)below(SIM_MAX_RANKS - 2 - HOST_RANK_BITS)
                   : 2 + (int)below(SIM_MAX_RANKS - 1);
    s->nhosts = 0;
    make_scenario();
    block = 1 + below(3);
    readahead = 1 + below(4);
    hold = below(3) ? 0 : 1000 * (1 + below(5));
    drop_at = drop ? below(400) : UINT64_MAX;
    corrupt_at = corrupt ? 1 + below(200) : UINT64_MAX;
    W.shadow = calloc(W.npages, SIM_PAGE);
    W.hist = calloc(MAX_TASKS * SIM_MAX_THREADS * SIM_MAX_RANKS + 1, sizeof *W.hist);
    if (W.hosts) {              /* 2 hosts or more, one with ranks beyond the bits */
        draw_hosts(s);
        place_at_leaders();
    }
    for (r = 0; r < s->n; r++)
        if (simnet_rank_init(s, r, W.npages, block, readahead, hold, W.nlocks, W.release))
            return 1;
    if (W.tracing)
        printf("seed %llu: %d ranks x %d threads on %d hosts, %llu pages, block %llu, "
               "read-ahead %llu, hold %llu ns, %u locks\n", (unsigned long long)seed, s->n,
               W.nthreads, s->nhosts ? s->nhosts : s->n, (unsigned long long)W.npages,
               (unsigned long long)block, (unsigned long long)readahead,
               (unsigned long long)hold, W.nlocks);
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
        if (W.exiting >= 0 && !s->r[W.exiting].dead)
            simnet_kill(s, W.exiting);
        W.exiting = -1;
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
        printf("replay: make sim SEED=%llu%s%s%s%s%s%s%s\n", (unsigned long long)seed,
               W.release || W.mismatch || W.hosts || drop || corrupt ? " SIMFLAGS='" : "",
               W.release ? " --release" : "", W.mismatch ? " --mismatch" : "",
               W.hosts ? " --hosts" : "", drop ? " --drop" : "", corrupt ? " --corrupt" : "",
               W.release || W.mismatch || W.hosts || drop || corrupt ? "'" : "");
    }
    for (r = 0; r < s->n; r++) {
        W.cover.ring_full += s->r[r].core.stats.ring_full;
        W.cover.homes_moved += s->r[r].core.stats.homes_moved;
        W.cover.early += s->r[r].core.stats.readahead_early;
        W.cover.opened += s->r[r].core.stats.opened_by_waiter;
        W.cover.host_maps += s->r[r].core.stats.host_maps;
        W.cover.early_flushes += s->r[r].core.stats.early_flushes;
        simnet_rank_free(&s->r[r]);
    }
    for (r = 0; r < s->n * s->n; r++)
        while (s->ch[r / s->n][r % s->n].head) {
            struct sim_msg *m = s->ch[r / s->n][r % s->n].head;
            s->ch[r / s->n][r % s->n].head = m->next;
            free(m->payload);
            free(m);
        }
    W.cover.split += s->split_receipts;
    free(s->delivered);
    free(W.shadow);
    free(W.hist);
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
        } else if (!strcmp(argv[i], "--release")) {
            W.release = 1;
        } else if (!strcmp(argv[i], "--mismatch")) {
            W.mismatch = 1;
        } else if (!strcmp(argv[i], "--hosts")) {
            W.hosts = 1;
        } else if (!strcmp(argv[i], "--corrupt")) {
            corrupt = 1;

        } else {
            fprintf(stderr, "usage: sim (--seeds A:B | --seed N) [--release] [--mismatch] "
                    "[--hosts] [--drop] [--corrupt]\n");
            return 2;
        }
    }
    for (i = 0; a + (unsigned long long)i < b; i++)
        if (run(a + (unsigned long long)i, drop, corrupt))
            return 1;
    printf("covered: %llu steps with a page lent to several readers, %llu full rings, "
           "%llu lock hand-offs between holders, %llu collective messages, %llu homes moved, "
           "%llu page runs, %llu payloads received in two parts, %llu early read-aheads, "
           "%llu pages opened by their waiter, %llu steps while another thread dropped "
           "core.mu, %llu host copies checked, %llu host invalidations (%llu of ranks beyond "
           "the bits), %llu faults a host's copy served, %llu pages sent home early, %llu large "
           "reduces among all the ranks\n",
           (unsigned long long)W.cover.fanout, (unsigned long long)W.cover.ring_full,
           (unsigned long long)W.cover.handoffs, (unsigned long long)W.cover.collectives,
           (unsigned long long)W.cover.homes_moved, (unsigned long long)W.cover.runs,
           (unsigned long long)W.cover.split, (unsigned long long)W.cover.early,
           (unsigned long long)W.cover.opened, (unsigned long long)W.cover.nested,
           (unsigned long long)W.cover.host_copies, (unsigned long long)W.cover.host_invs,
           (unsigned long long)W.cover.overflow_invs, (unsigned long long)W.cover.host_maps,
           (unsigned long long)W.cover.early_flushes, (unsigned long long)W.cover.among_all);
    printf("%d seeds passed%s%s%s%s%s\n", i, W.release ? " (--release)" : "",
           W.mismatch ? " (--mismatch)" : "", W.hosts ? " (--hosts)" : "",
           drop ? " (--drop)" : "", corrupt ? " (--corrupt)" : "");
    return 0;
}
