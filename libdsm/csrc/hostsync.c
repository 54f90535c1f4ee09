/* Layer 2: the waits of the ranks of one host on the control area of
 * their shared memfd (hostmem.h): a barrier step with one atomic add per
 * rank and, for the last, one store, and a wait on any futex word of the
 * area (hostcoll.c and hostlock.c build on both).  A waiter spins while there is a
 * core for it (core.spin_ns), yields for a while, then sleeps on a futex,
 * waking at least every FAIL_POLL_NS to see whether the job failed: a dead
 * rank (found by the comm thread's connections and heartbeats, as for every
 * other wait) still ends the job, and is named.  And the futex mutex of
 * the host's locks and mailboxes. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "hostmem.h"

#define FAIL_POLL_NS 20000000ULL    /* a sleeping waiter looks at core_failed this often */
/* Past its spin_ns, a waiter yields the CPU in a loop for this many times
 * as long before it sleeps: runnable, it is back within a time slice when
 * the last rank comes, where a futex wake on a busy host takes a
 * scheduler's round (measured on the 2-vCPU VM at load 7: a median
 * barrier of 62 us with sleeping at once, against Open MPI's 0.7 us, whose
 * --oversubscribe polling yields likewise and never sleeps). */
#define YIELD_SPINS 20

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    sched_yield();
#endif
}

/* The futex is in memory shared between processes: no FUTEX_PRIVATE_FLAG. */
static void futex_wait(uint32_t *word, uint32_t seen, uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };
    syscall(SYS_futex, word, FUTEX_WAIT, seen, &ts, NULL, 0);
}

int host_wait_word(struct hostmem *h, uint32_t *word, uint32_t seen, uint32_t *sleepers,
                   const uint32_t *stop, uint64_t deadline, char *err)
{
    uint64_t t = now_ns(), spin = t + h->c->spin_ns, yield = t + YIELD_SPINS * h->c->spin_ns;
    while (__atomic_load_n(word, __ATOMIC_SEQ_CST) == seen && (t = now_ns()) < yield &&
           (!deadline || t < deadline)) {
        if (t < spin)
            cpu_relax();
        else
            sched_yield();
    }
    while (__atomic_load_n(word, __ATOMIC_SEQ_CST) == seen) {
        uint64_t slice = FAIL_POLL_NS;
        if (core_failed(h->c)) {
            dsm_err(err, "%s", h->c->failure);
            return DSM_EPEER;
        }
        /* stop is set after the word moved, if it was to move: look again */
        if (stop && __atomic_load_n(stop, __ATOMIC_SEQ_CST) &&
            __atomic_load_n(word, __ATOMIC_SEQ_CST) == seen)
            return DSM_ECOLL;
        if (deadline && (t = now_ns()) >= deadline)
            return DSM_ETIMEDOUT;
        if (deadline && deadline - t < slice)
            slice = deadline - t;
        if (sleepers)
            __atomic_fetch_add(sleepers, 1, __ATOMIC_SEQ_CST);
        futex_wait(word, seen, slice);
        if (sleepers)
            __atomic_fetch_sub(sleepers, 1, __ATOMIC_SEQ_CST);
    }
    return DSM_OK;
}

void host_wake(uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

void host_wake_sleepers(uint32_t *word, uint32_t *sleepers)
{
    if (__atomic_load_n(sleepers, __ATOMIC_SEQ_CST))
        host_wake(word, INT_MAX);
}

int host_mutex_take(struct hostmem *h, uint32_t *word, uint32_t timeout_ms, char *err)
{
    uint32_t free_ = 0;
    uint64_t deadline = timeout_ms && timeout_ms != UINT32_MAX ?
                        now_ns() + timeout_ms * 1000000ULL : 0;
    int rc;
    if (__atomic_compare_exchange_n(word, &free_, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return DSM_OK;
    if (!timeout_ms)
        return DSM_ETIMEDOUT;
    /* held: from now on it is marked slept on, so its release wakes us */
    while (__atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE) != 0)
        if ((rc = host_wait_word(h, word, 2, NULL, NULL, deadline, err)))
            return rc;
    return DSM_OK;
}

void host_mutex_give(uint32_t *word)
{
    if (__atomic_exchange_n(word, 0, __ATOMIC_RELEASE) == 2)
        host_wake(word, 1);
}

/* Every rank of the host has arrived.  Each arrival is a full fence
 * (release and acquire): what a rank wrote before the barrier is seen by
 * every rank after it, which is all release mode's barrier asks of memory
 * that is one physical copy.  A waiter counts itself a sleeper before the
 * futex checks gen, the last arriver bumps gen before it reads the
 * sleepers, so one of them sees the other (and the timeout bounds any
 * wait regardless). */
int host_step(struct hostmem *h, uint32_t *gen, char *err)
{
    struct host_ctrl *k = h->ctrl;
    *gen = __atomic_load_n(&k->gen, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&k->finalized, __ATOMIC_SEQ_CST))
        return DSM_ECOLL;           /* that rank never comes: arrive not */
    if (__atomic_add_fetch(&k->arrived, 1, __ATOMIC_SEQ_CST) < (uint32_t)h->nlocal)
        return host_wait_word(h, &k->gen, *gen, &k->sleepers, &k->finalized, 0, err);
    __atomic_store_n(&k->arrived, 0, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&k->gen, 1, __ATOMIC_SEQ_CST);
    host_wake_sleepers(&k->gen, &k->sleepers);
    return DSM_OK;
}

int host_running(struct hostmem *h, const char *what, char *err)
{
    if (!h) {
        dsm_err(err, "the host %s is for host-shared memory (DSM_SHARE=host), which this "
                "process has not started", what);
        return DSM_ESTATE;
    }
    if (__atomic_load_n(&h->c->phase, __ATOMIC_ACQUIRE) != PHASE_RUNNING) {
        dsm_err(err, "the DSM was finalized");     /* started, since h is there */
        return DSM_ESTATE;
    }
    return DSM_OK;
}
