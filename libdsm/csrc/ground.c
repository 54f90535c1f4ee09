/* Layer 0, the ground: errors, the recorded failure, panic, tracing, the
 * clock and the one way a thread waits.  It calls nothing above it. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "ground.h"

static __thread int last_errno;     /* of the last dsm_err_sys in this thread */

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void dsm_err(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, DSM_ERRLEN, fmt, ap);
    va_end(ap);
}

int dsm_err_sys(char *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(err, DSM_ERRLEN, fmt, ap);
    va_end(ap);
    if (n >= 0 && n < DSM_ERRLEN)
        snprintf(err + n, DSM_ERRLEN - (size_t)n, ": %s", strerror(errnum));
    last_errno = errnum;
    return DSM_ESYS;
}

int dsm_last_errno(void)
{
    return last_errno;
}

/* One line to stderr with a single write; safe in the signal handler as
 * long as the format has no floating point. */
static void say(int rank, const char *tag, const char *fmt, va_list ap)
{
    char line[512];
    int n = snprintf(line, sizeof line, "libdsm: rank %d: %s", rank, tag);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(2, line, (size_t)n) < 0)
        return;
}

void dsm_trace(int rank, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(rank, "", fmt, ap);
    va_end(ap);
}

/* The one can't-continue case: a faulting access that can never be served. */
void dsm_panic(int rank, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(rank, "fatal: ", fmt, ap);
    va_end(ap);
    _exit(1);
}

void core_init(struct core *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->clock = now_ns;
    c->failed_peer = -1;
}

int core_take_hosts(struct core *c, const int *leaders, struct host_tables *t, char *err)
{
    int r;
    c->leader = leaders[c->rank];
    for (r = 0; r < c->nranks; r++) {
        t->leader_of[r] = (uint16_t)leaders[r];
        if (leaders[r] == r && c->nleaders == DSM_MAX_RANK_COPIES) {
            dsm_err(err, "share=host: more than %d hosts (copysets are 64-bit masks of "
                    "hosts)", DSM_MAX_RANK_COPIES);
            return DSM_EINVAL;
        }
        if (leaders[r] == r) {
            t->host_of[r] = (uint16_t)c->nleaders;
            t->leaders[c->nleaders++] = (uint16_t)r;
        }
        if (leaders[r] == c->leader) {
            if (r == c->rank)
                c->local_index = c->nlocal;
            t->locals[c->nlocal++] = (uint16_t)r;
        }
    }
    c->leaders = t->leaders;
    c->host_of = t->host_of;
    c->locals = t->locals;
    c->leader_of = t->leader_of;
    return DSM_OK;
}

/* The first caller claims the record and writes it; failed is stored
 * last, so whoever reads it set (core_failed) sees the whole record.  No
 * lock: this runs from under any lock, core.mu and txmu included. */
static void fail(struct core *c, int peer, const char *fmt, va_list ap)
{
    if (!__atomic_exchange_n(&c->fail_claim, 1, __ATOMIC_ACQ_REL)) {
        c->failed_peer = peer;
        vsnprintf(c->failure, sizeof c->failure, fmt, ap);
        __atomic_store_n(&c->failed, 1, __ATOMIC_SEQ_CST);
        TRACE(c, "failure: %s", c->failure);
    }
    core_wake(c);
}

void core_fail(struct core *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail(c, -1, fmt, ap);
    va_end(ap);
}

void core_fail_peer(struct core *c, int peer, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail(c, peer, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------- waiting */

/* The event count pairs with `sleepers` as in Dekker's algorithm (all
 * sequentially consistent): a waker that reads no sleeper bumped the count
 * before the sleeper announced itself, so the sleeper's futex wait sees
 * the new count and returns at once. */
void core_wake(struct core *c)
{
    __atomic_fetch_add(&c->wake_seq, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&c->sleepers, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &c->wake_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void core_sleep(struct core *c, uint32_t seq, uint64_t deadline_ns)
{
    struct timespec ts, *at = NULL;
    lockcheck_only(1u << LK_CORE, __func__);
    if (deadline_ns) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000ULL);
        ts.tv_nsec = (long)(deadline_ns % 1000000000ULL);
        at = &ts;
    }
    __atomic_fetch_add(&c->sleepers, 1, __ATOMIC_SEQ_CST);
    core_unlock(c);
    if (core_seq(c) == seq)     /* absolute CLOCK_MONOTONIC deadline with the bitset form */
        syscall(SYS_futex, &c->wake_seq, FUTEX_WAIT_BITSET_PRIVATE, seq, at, NULL,
                FUTEX_BITSET_MATCH_ANY);
    core_lock(c);
    __atomic_fetch_sub(&c->sleepers, 1, __ATOMIC_SEQ_CST);
}

void core_record_prot(struct core *c, uint64_t first, uint64_t n, int prot)
{
    uint64_t i;
    for (i = first; i < first + n; i++)
        __atomic_store_n(&c->pages[i].prot, (uint8_t)prot, __ATOMIC_RELEASE);
}

int core_running(struct core *c, char *err)
{
    if (c->phase == PHASE_RUNNING)
        return DSM_OK;
    dsm_err(err, c->phase == PHASE_IDLE ? "the DSM is not started" : "the DSM was finalized");
    return DSM_ESTATE;
}

/* Poll for up to spin_ns while cond() is false.  A reply that comes within
 * a few tens of microseconds then finds this thread awake, which saves a
 * futex wake-up on the way back.  Two ways:
 *   - core.poll: this thread receives and delivers what comes from the
 *     peers itself, which also saves the comm thread's wake-up and its
 *     hand-off to us (when every thread has a core);
 *   - else it yields the CPU in a loop, so that the comm thread has it at
 *     once.  With `poll_comm`, the comm thread polls without sleeping
 *     meanwhile, which saves its own wake-up when the reply arrives (used
 *     for barriers and locks; for faults it cost more than it saved). */
void core_spin(struct core *c, int (*cond)(void *), void *arg, int poll_comm)
{
    uint64_t until;
    if (!c->spin_ns || cond(arg))
        return;
    until = now_ns() + c->spin_ns;
    poll_comm = poll_comm && !c->poll;
    if (poll_comm)
        __atomic_fetch_add(&c->busy_poll, 1, __ATOMIC_RELAXED);
    do {
        core_unlock(c);
        if (c->poll)
            c->poll(c->poll_ctx, until);
        else
            sched_yield();
        core_lock(c);
    } while (!cond(arg) && !core_failed(c) && now_ns() < until);
    if (poll_comm)
        __atomic_fetch_sub(&c->busy_poll, 1, __ATOMIC_RELAXED);
}

int core_sleep_until(struct core *c, uint32_t seq, uint64_t deadline_ns)
{
    if (deadline_ns && now_ns() >= deadline_ns)
        return 1;
    core_sleep(c, seq, deadline_ns);
    return 0;
}


/* ---------------------------------------------------------- what threads wait for */

static __thread int my_tid;         /* this thread's id, asked once */

int core_note_wait(struct core *c, int kind, uint64_t a, uint64_t b)
{
    int i, free_kind;
    if (!my_tid)
        my_tid = (int)syscall(SYS_gettid);
    for (i = 0; i < CORE_WAIT_SLOTS; i++) {
        struct wait_note *w = &c->waits[i];
        free_kind = WAIT_FREE;
        if (__atomic_compare_exchange_n(&w->kind, &free_kind, WAIT_CLAIMED, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            w->tid = my_tid;
            w->a = a;
            w->b = b;
            __atomic_store_n(&w->kind, kind, __ATOMIC_RELEASE);
            return i;
        }
    }
    return -1;
}

void core_end_wait(struct core *c, int slot)
{
    if (slot >= 0)
        __atomic_store_n(&c->waits[slot].kind, WAIT_FREE, __ATOMIC_RELEASE);
}

/* Append text, or the decimal v when text is NULL, keeping room for the NUL. */
static void put(char *buf, uint64_t len, uint64_t *at, const char *text, uint64_t v)
{
    char digits[24];
    int n = 0;
    if (!text) {
        do
            digits[n++] = (char)('0' + v % 10);
        while ((v /= 10));
    }
    while (text ? *text : n > 0)
        if (*at + 1 < len)
            buf[(*at)++] = text ? *text++ : digits[--n];
        else
            return;
}

uint64_t core_describe_waits(struct core *c, char *buf, uint64_t len)
{
    static const char *what[] = { "", "", "lock ", "collective ", "page ", "pages ",
                                  "finalize" };
    static const char *colls[] = { "barrier", "bcast", "reduce", "gather" };
    uint64_t at = 0;
    int i;
    for (i = 0; i < CORE_WAIT_SLOTS && len; i++) {
        const struct wait_note *w = &c->waits[i];
        int kind = __atomic_load_n(&w->kind, __ATOMIC_ACQUIRE);
        if (kind <= WAIT_CLAIMED || kind > WAIT_FINALIZE)
            continue;
        put(buf, len, &at, "thread ", 0);
        put(buf, len, &at, NULL, (uint64_t)w->tid);
        put(buf, len, &at, ": ", 0);
        put(buf, len, &at, what[kind], 0);
        if (kind == WAIT_COLL && w->a >= DSM_COLL_BARRIER && w->a <= DSM_COLL_GATHER)
            put(buf, len, &at, colls[w->a - DSM_COLL_BARRIER], 0);
        else if (kind != WAIT_FINALIZE)
            put(buf, len, &at, NULL, w->a);
        if (kind == WAIT_COLL || kind == WAIT_PAGE || kind == WAIT_PAGES)
            put(buf, len, &at, kind == WAIT_COLL ? " #" : kind == WAIT_PAGE ? " from rank " :
                " count ", 0);
        if (kind == WAIT_COLL || kind == WAIT_PAGE || kind == WAIT_PAGES)
            put(buf, len, &at, NULL, w->b);
        put(buf, len, &at, "\n", 0);
    }
    if (len)
        buf[at] = 0;
    return at;
}

#ifdef DSM_LOCKCHECK
/* ---------------------------------------------------------- lock order check */

static __thread unsigned held;      /* bit per lock_level this thread holds */

static void lock_abort(const char *where, const char *what, int level)
{
    char line[160];
    int n = snprintf(line, sizeof line, "libdsm: lock order: %s: %s level %d (held 0x%x)\n",
                     where, what, level, held);
    if (write(2, line, (size_t)n) < 0)
        abort();
    abort();
}

void lockcheck_take(int level, const char *where)
{
    if (held & 1u << level)
        lock_abort(where, "taking again", level);
    if (held >> level)
        lock_abort(where, "taking out of order", level);
    held |= 1u << level;
}

void lockcheck_drop(int level, const char *where)
{
    if (!(held & 1u << level))
        lock_abort(where, "dropping a lock not held at", level);
    held &= ~(1u << level);
}

void lockcheck_only(unsigned mask, const char *where)
{
    if (held != mask)
        lock_abort(where, "holding other locks than expected, wanted mask", (int)mask);
}

unsigned lockcheck_held(void)
{
    return held;
}
#endif
