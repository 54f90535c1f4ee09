/* Layer 0, the ground: what every layer of one rank shares, and calls
 * nothing above it.
 *
 *   ground.c     errors, failure, panic, tracing, clock, waiting
 *   wire.c       the message header and its wire encoding (proto.h)
 *   ring.c       the bounded queue from application threads to the comm thread
 *   reduce.c     elementwise reductions of typed arrays
 *   trace.c      the event trace (dsmexec --trace): fixed records, one atomic add each
 *   region.c     layer 1: the two views of the memory, protections
 *   hostmem.c    layer 1: the memfd the ranks of a host share (DSM_SHARE=host)
 *   transport.c  layer 1: the handler table, messages to ourselves, settling
 *   comm.c       layer 1: the socket backend of the transport (the comm thread)
 *   commstep.c   layer 1: the comm thread's decisions, step functions of the time
 *   route.c      layer 1: the connection structure (host leaders) and the routes over it
 *   peer.c       layer 1: one connection of it: framing, outbox, payloads in place
 *   net.c        layer 1: socket helpers
 *   coh.c        layer 2: coherence, the model chosen once (struct coh_proto)
 *   coh_app.c    layer 2: coherence, the faulting side (requests, read-ahead)
 *   coh_serve.c  layer 2: coherence, the receiving side of both models (installs, requests)
 *   coh_sc.c     layer 2: coherence, sequential (owner, holder, home directory)
 *   coh_rc.c     layer 2: coherence in release mode (twins, diffs, notices)
 *   coh_twin.c   layer 2: release mode's twins and diffs (coh_rc.c's, coh_rchost.c's)
 *   coh_rchost.c layer 2: release mode across hosts (a host leader's flushes and drops)
 *   coh_pin.c    layer 2: coherence, pinned pages (kept here; what asks waits)
 *   coh_place.c  layer 2: coherence, moving page homes (dsm_place)
 *   coh_host.c   layer 2: coherence across hosts with host-shared memory (a host's copy)
 *   coll.c       layer 2: collectives by recursive doubling
 *   locks.c      layer 2: locks as distributed FIFO queues
 *   mbox.c       layer 2: counted mailboxes, the wake-ups of Condition (libdsm.sync)
 *   hostsync.c   layer 2: the barrier step, futex waits and futex mutex of a host's ranks,
 *                in their shared memory
 *   hostcoll.c   layer 2: the collectives in the host's shared memory (across hosts: two
 *                levels, the leaders' level through api.c's registered `across`)
 *   hostlock.c   layer 2: the locks of a one-host job, futexes in the host's shared memory
 *   hostmbox.c   layer 2: the mailboxes of a one-host job (Condition's wake-ups), in its
 *                shared memory
 *   ops.c        layer 2: the operations, each blocking call as a resumable step function
 *   ops_mode.c   layer 2: what the operations do in each consistency mode (struct op_mode)
 *   fault.c      layer 3: SIGSEGV entry: in the region or not
 *   waitsig.c    layer 3: SIGUSR1: what each thread waits for (a hung job's stacks)
 *   api.c        layer 4: the entry points cffi sees (dsm_api.h)
 *
 * Calls go down only.  The transport reaches the protocols through the
 * handlers they register (transport.h); nothing else calls upwards.
 * A simulated rank (tests/sim) has a `struct core` of its own: no layer
 * below the API keeps state in globals. */
#ifndef DSM_GROUND_H
#define DSM_GROUND_H

#include <pthread.h>
#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include "dsm_api.h"
#include "trace.h"

#define DSM_MAX_RANKS 1024      /* ranks of a job: routed through host leaders (route.h) */
#define DSM_MAX_RANK_COPIES 64  /* ... of a per-rank job: copysets are 64-bit masks of ranks */

enum dsm_phase { PHASE_IDLE, PHASE_RUNNING, PHASE_FINISHED };

/* One page as this rank sees it.  prot and pending are guarded by core.mu. */
struct page {
    uint8_t prot;               /* DSM_PROT_* of the application view */
    uint8_t pending;            /* mode of our outstanding DSM_REQ, or 0 */
    uint8_t invalidated;        /* a writer has taken a read copy of ours away */
    uint32_t given_up;          /* times this rank served or dropped it (thrashing) */
    uint64_t installed_ns;      /* when it was last received (hold window) */
    uint32_t pinned;            /* dsm_pin holds on it: it is not given away */
    uint8_t leaving;            /* the comm thread is giving it away: not to be pinned */
    uint8_t trigger;            /* read-ahead: when it comes, keep it closed, so that the
                                 * first access asks for the next run (coh_app.c) */
    uint8_t closed;             /* it came, and is kept closed: the DSM_PROT_* it opens with */
    uint16_t waiters;           /* threads in a fault on it: when it comes, one of them opens it */
    uint8_t granted;            /* share=host across hosts: our leader answered our DSM_HREQ,
                                 * and mapping it ends that fault (not counted a host_map) */
};

/* How protections reach the application view: region.c on a real rank,
 * a plain record in the simulator.  protect() applies `prot` to pages
 * [first, first + n) and records it with core_record_prot; on failure it
 * returns nonzero with err[DSM_ERRLEN] filled.  Any thread may call it,
 * holding core.mu or not. */
struct mem_ops {
    int (*protect)(void *ctx, uint64_t first, uint64_t n, int prot, char *err);
    void (*populate)(void *ctx, uint64_t first, uint64_t n);  /* back with memory, may no-op */
    void *ctx;
};

/* The lock order.  Every mutex of a rank has a level; a thread takes them
 * in increasing level only, and never one it holds already:
 *
 *   LK_LOOP    comm.c's loop_mu: whoever plays the comm thread (the comm
 *              thread, or in DSM_WAIT=reply a waiting application thread
 *              by trylock).  Held across deliveries, hence across every
 *              handler, its sends and its mprotects.
 *   LK_CORE    core.mu: the page table, phase, the protocols' state.  The
 *              comm thread may hold it across a send (tp_send: queued, or
 *              written straight to the socket under txmu) and across an
 *              mprotect.  An application thread never holds it across a
 *              send to a peer (tp_send_app drops it) nor in a page fault's
 *              access; it does hold it across an mprotect (coh_rc.c).
 *   LK_TX      a peer's txmu (peer.c): one peer's at a time, held across
 *              that peer's sendmsg only.
 *   LK_REGION  region.c's mu: held across an mprotect only.
 *
 * No lock is needed to record a failure (core_fail) or to wake waiters
 * (core_wake): both may be called holding any of these.  Sleeping
 * (core_sleep) holds core.mu only, and drops it.  The trace takes no lock
 * (one atomic add per event).
 *
 * With -DDSM_LOCKCHECK (the simulator's build, and a debug build of the
 * core), every take and drop goes through mu_lock/mu_unlock, which keep a
 * per-thread mask of the levels held and abort on a take out of order or
 * of a level held already. */
enum lock_level { LK_LOOP, LK_CORE, LK_TX, LK_REGION };

#ifdef DSM_LOCKCHECK
void lockcheck_take(int level, const char *where);
void lockcheck_drop(int level, const char *where);
/* Abort unless the levels this thread holds are exactly `mask`. */
void lockcheck_only(unsigned mask, const char *where);
/* The levels this thread holds (the simulator switches threads only where
 * the running one holds no core.mu). */
unsigned lockcheck_held(void);
#else
static inline void lockcheck_take(int level, const char *where) { (void)level, (void)where; }
static inline void lockcheck_drop(int level, const char *where) { (void)level, (void)where; }
static inline void lockcheck_only(unsigned mask, const char *where) { (void)mask, (void)where; }
#endif

static inline void mu_lock_at(pthread_mutex_t *m, int level, const char *where)
{
    lockcheck_take(level, where);
    pthread_mutex_lock(m);
}

/* 0 if taken, as pthread_mutex_trylock. */
static inline int mu_trylock_at(pthread_mutex_t *m, int level, const char *where)
{
    int rc = pthread_mutex_trylock(m);
    if (!rc)
        lockcheck_take(level, where);
    return rc;
}

static inline void mu_unlock_at(pthread_mutex_t *m, int level, const char *where)
{
    lockcheck_drop(level, where);
    pthread_mutex_unlock(m);
}

#define mu_lock(m, level) mu_lock_at(m, level, __func__)
#define mu_trylock(m, level) mu_trylock_at(m, level, __func__)
#define mu_unlock(m, level) mu_unlock_at(m, level, __func__)
#define core_lock(c) mu_lock(&(c)->mu, LK_CORE)
#define core_unlock(c) mu_unlock(&(c)->mu, LK_CORE)

/* What a thread waits for, for dsm_describe_waits (core_note_wait). */
enum wait_kind { WAIT_FREE, WAIT_CLAIMED, WAIT_LOCK, WAIT_COLL, WAIT_PAGE, WAIT_PAGES,
                 WAIT_FINALIZE };
#define CORE_WAIT_SLOTS 32
struct wait_note {
    int kind;                   /* enum wait_kind, stored last (release) */
    int tid;
    uint64_t a, b;              /* lock; kind, epoch; page, home; first, count */
};

struct core {
    /* configuration, fixed after start */
    int rank, nranks, debug;
    int release;                /* release consistency (coh_rc.c), else sequential */
    uint64_t npages, page_size, block;
    uint64_t hold_ns;           /* a received page is kept this long */
    uint64_t readahead;         /* most pages one read fault asks for */
    uint64_t spin_ns;           /* a waiting thread yields this long before sleeping */
    uint64_t (*clock)(void);    /* monotonic ns: now_ns, or simulated time */
    unsigned char *rw;          /* page data, always read/write */
    struct page *pages;
    uint16_t *homes;            /* each page's home, which can move (coh_init); NULL before */
    struct mem_ops mem;
    /* share=host on several hosts (coh_host.c), fixed after start: the
     * protocol runs between host leaders, and the other ranks of a host
     * map what their leader holds for the host.  nleaders 0: every rank
     * takes part itself (per-rank mode, or one host), and the rest is unset. */
    int nleaders;
    const uint16_t *leaders;    /* the leaders in rank order: homes go round-robin over them */
    const uint16_t *host_of;    /* each leader's place among them, by rank: its copyset bit */
    int leader;                 /* this rank's leader, the one that takes part for it */
    const uint16_t *leader_of;  /* every rank's leader, by rank */
    int nlocal, local_index;    /* the ranks of this host, and this rank's place among them */
    const uint16_t *locals;     /* ... their ranks, by place */
    uint64_t *host_state;       /* per page, the host's copy (hostmem.h's word, shared) */

    pthread_mutex_t mu;         /* guards the page table, phase, waits (LK_CORE) */
    /* The event count every waiter sleeps on: core_wake bumps it after any
     * state change a waiter may want (see core_sleep).  Atomic, no lock. */
    uint32_t wake_seq;
    uint32_t sleepers;          /* threads in core_sleep: core_wake makes a syscall only then */
    int phase;
    /* The failure, recorded without a lock: fail_claim picks the one writer
     * of failed_peer and failure, which then stores failed (release); once
     * core_failed() says so, both are fixed for good. */
    int fail_claim;
    int failed;
    int failed_peer;            /* the rank whose loss caused the failure, or -1 */
    char failure[DSM_ERRLEN];
    int busy_poll;              /* threads asking the comm thread not to sleep */
    /* With a core to spare for each thread: a waiting thread receives its
     * reply itself.  The backend's poll(ctx, until) receives and delivers
     * what comes from the peers until something did or the clock reached
     * `until`.  NULL: the thread yields, and the comm thread receives.
     * Set once, before the comm thread starts. */
    void (*poll)(void *ctx, uint64_t until);
    void *poll_ctx;
    struct dsm_stats stats;
    uint64_t heartbeat_ns;      /* a peer silent this long is dead; 0: never (fixed) */
    struct trace *trace;        /* events for dsmexec --trace; NULL: off (set once) */
    pid_t pid;                  /* the process that started the core; 0: not checked */
    struct wait_note waits[CORE_WAIT_SLOTS];    /* no lock: see core_note_wait */
};

/* Tracing that costs one branch when DSM_DEBUG is off. */
#define TRACE(c, ...) do { if ((c)->debug) dsm_trace((c)->rank, __VA_ARGS__); } while (0)
/* An event for the trace: one branch when it is off.  Arguments as trace_add. */
#define TRACE_EVENT(c, ...) do { \
        struct trace *t_ = __atomic_load_n(&(c)->trace, __ATOMIC_ACQUIRE); \
        if (t_) trace_add(t_, __VA_ARGS__); } while (0)
void dsm_trace(int rank, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dsm_panic(int rank, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

/* "what: why" into a caller's err[DSM_ERRLEN]. */
void dsm_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for a failed system call: appends strerror(errnum) and keeps
 * errnum for dsm_last_errno() in this thread.  Returns DSM_ESYS. */
int dsm_err_sys(char *err, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

uint64_t now_ns(void);

void core_init(struct core *c);
/* The tables core.leaders, host_of, locals and leader_of point into. */
struct host_tables {
    uint16_t leaders[DSM_MAX_RANKS], host_of[DSM_MAX_RANKS], locals[DSM_MAX_RANKS],
        leader_of[DSM_MAX_RANKS];
};
/* share=host on several hosts, at start: the protocol runs between the
 * host leaders; record them (leaders: every rank's, by rank) and this
 * host's ranks in c, the tables in t.  DSM_OK, or DSM_EINVAL with err
 * filled past DSM_MAX_RANK_COPIES hosts (copysets are masks of hosts). */
int core_take_hosts(struct core *c, const int *leaders, struct host_tables *t, char *err);
/* Record the first failure and wake every waiter.  Any thread, holding any
 * lock or none: it takes no lock (a send that fails under core.mu or txmu
 * records its failure here). */
void core_fail(struct core *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* core_fail for the loss of rank `peer` (a closed or reset connection, a
 * silent peer): the first failure's peer is what dsmexec blames. */
void core_fail_peer(struct core *c, int peer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Has the job failed?  Once it says so, c->failure and c->failed_peer are
 * written and stay as they are. */
static inline int core_failed(const struct core *c)
{
    return __atomic_load_n(&c->failed, __ATOMIC_ACQUIRE);
}
/* Set the recorded protection of pages [first, first + n).  Each byte is
 * stored whole: readers under c->mu see the old or the new protection, and
 * whoever makes a waiter's access possible calls core_wake itself. */
void core_record_prot(struct core *c, uint64_t first, uint64_t n, int prot);
/* DSM_OK if running, else DSM_ESTATE with err filled (caller holds c->mu or
 * runs before the comm thread starts). */
int core_running(struct core *c, char *err);

/* The one way of waiting.  A waiter reads the event count with core_seq
 * before it looks at its condition (under core.mu; the look may drop and
 * retake core.mu, as a step that sends does), and if the condition is
 * false calls core_sleep with what it read: that returns at once if any
 * core_wake came since the read, else once one comes.  No wake-up is lost,
 * and a waker needs no lock: it changes the state (under core.mu, or
 * atomically), then calls core_wake.
 *
 *     for (;;) {
 *         uint32_t seq = core_seq(c);
 *         if (step_done(...) || core_failed(c)) break;
 *         core_sleep(c, seq, 0);
 *     }
 */
static inline uint32_t core_seq(const struct core *c)
{
    return __atomic_load_n(&c->wake_seq, __ATOMIC_SEQ_CST);
}
/* Any thread, holding any lock or none. */
void core_wake(struct core *c);
/* Caller holds core.mu and no other lock: drop it, sleep until the event
 * count differs from `seq` (or the clock reaches deadline_ns, if not 0),
 * take it again.  May return early (spuriously). */
void core_sleep(struct core *c, uint32_t seq, uint64_t deadline_ns);
/* core_sleep for a waiter with a deadline (now_ns; 0: none): nonzero, and
 * no sleep, once the deadline has passed. */
int core_sleep_until(struct core *c, uint32_t seq, uint64_t deadline_ns);
/* Caller holds c->mu: yield (or poll, core.poll) for up to spin_ns while
 * cond() is false, before a sleep; cond() runs under core.mu and must not
 * drop it.  api.c's run() spins until the event count moves. */
void core_spin(struct core *c, int (*cond)(void *), void *arg, int poll_comm);

/* Note that this thread waits for (kind, a, b) until core_end_wait(slot):
 * the slot, or -1 when all are taken.  No lock: a slot is claimed by an
 * atomic exchange, and read from a signal handler (core_describe_waits). */
int core_note_wait(struct core *c, int kind, uint64_t a, uint64_t b);
void core_end_wait(struct core *c, int slot);
/* One line per noted wait into buf (at most len bytes, NUL-terminated);
 * the bytes written.  Async-signal-safe: no lock, no allocation, no stdio. */
uint64_t core_describe_waits(struct core *c, char *buf, uint64_t len);

/* Round-robin by blocks of pages to begin with; then a table that
 * placements change (coh_place.c) and, in release mode, single writers
 * (coh_rc.c). */
static inline int page_home_initial(const struct core *c, uint64_t page)
{
    uint64_t b = page / c->block;
    return c->nleaders ? c->leaders[b % (uint64_t)c->nleaders] : (int)(b % (uint64_t)c->nranks);
}

/* May rank r home pages: any rank, or with share=host on several hosts a
 * host's leader (a placement's homes are checked, dsm_place). */
static inline int homes_pages(const struct core *c, int r)
{
    return !c->nleaders || c->leaders[c->host_of[r]] == r;
}

static inline int page_home(const struct core *c, uint64_t page)
{
    if (c->homes)
        return c->homes[page];
    return page_home_initial(c, page);
}

/* The bit of a rank taking part in the protocol in a directory's copyset:
 * the rank, or with share=host on several hosts its host's place among the
 * leaders (copysets are 64-bit masks of hosts then); and the rank of a bit. */
static inline uint64_t coh_bit(const struct core *c, int rank)
{
    return 1ULL << (c->nleaders ? c->host_of[rank] : rank);
}

static inline int coh_rank_of(const struct core *c, int bit)
{
    return c->nleaders ? c->leaders[bit] : bit;
}

/* The rank that takes part in the protocol for this one. */
/* How many of the n pages from `page` on share its home: one request. */
static inline uint64_t home_run(const struct core *c, uint64_t page, uint64_t n)
{
    uint64_t k = 1, cut = (page / c->block + 1) * c->block - page;
    if (!c->homes)
        return cut < n ? cut : n;
    while (k < n && c->homes[page + k] == c->homes[page])
        k++;
    return k;
}

/* A rank starts owning the pages it homes, writable.  With share=host on
 * several hosts only the leaders home pages: the host's other ranks start
 * with nothing mapped, and their first touch of a page their host holds is
 * a local hit (coh_host.c), so a page none of them touched is served away
 * with no DSM_HINV. */
static inline int page_initial_prot(const struct core *c, uint64_t page)
{
    return page_home(c, page) == c->rank ? DSM_PROT_RW : DSM_PROT_NONE;
}
#endif
