/* Layer 2: synchronisation of the ranks of one host through the control
 * area of their shared memfd (hostmem.h): a barrier with one atomic add
 * per rank and, for the last, one store.  A waiter spins while there is a
 * core for it (core.spin_ns), yields for a while, then sleeps on a futex,
 * waking at least every FAIL_POLL_NS to see whether the job failed: a dead
 * rank (found by the comm thread's connections and heartbeats, as for every
 * other wait) still ends the job, and is named. */
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

static void futex_wake_all(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Wait until the barrier count moves on from `gen`: DSM_OK, or DSM_EPEER
 * with err filled once the job failed.  Every access is sequentially
 * consistent: a waiter counts itself a sleeper before the futex checks
 * gen, the last arriver bumps gen before it reads the sleepers, so one of
 * them sees the other (and the timeout bounds any wait regardless). */
static int wait_gen(struct hostmem *h, uint32_t gen, char *err)
{
    struct host_ctrl *k = h->ctrl;
    uint64_t t = now_ns(), spin = t + h->c->spin_ns, yield = t + YIELD_SPINS * h->c->spin_ns;
    while (__atomic_load_n(&k->gen, __ATOMIC_SEQ_CST) == gen && (t = now_ns()) < yield) {
        if (t < spin)
            cpu_relax();
        else
            sched_yield();
    }
    while (__atomic_load_n(&k->gen, __ATOMIC_SEQ_CST) == gen) {
        if (core_failed(h->c)) {
            dsm_err(err, "%s", h->c->failure);
            return DSM_EPEER;
        }
        __atomic_fetch_add(&k->sleepers, 1, __ATOMIC_SEQ_CST);
        futex_wait(&k->gen, gen, FAIL_POLL_NS);
        __atomic_fetch_sub(&k->sleepers, 1, __ATOMIC_SEQ_CST);
    }
    return DSM_OK;
}

/* Every rank of the host has arrived.  Each arrival is a full fence
 * (release and acquire): what a rank wrote before the barrier is seen by
 * every rank after it, which is all release mode's barrier asks of memory
 * that is one physical copy. */
static int barrier(struct hostmem *h, char *err)
{
    struct host_ctrl *k = h->ctrl;
    uint32_t gen = __atomic_load_n(&k->gen, __ATOMIC_SEQ_CST);
    if (__atomic_add_fetch(&k->arrived, 1, __ATOMIC_SEQ_CST) < (uint32_t)h->nlocal)
        return wait_gen(h, gen, err);
    __atomic_store_n(&k->arrived, 0, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&k->gen, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&k->sleepers, __ATOMIC_SEQ_CST))
        futex_wake_all(&k->gen);
    return DSM_OK;
}

int dsm_host_barrier(char *err)
{
    struct hostmem *h = hostmem_get();
    uint64_t t0 = now_ns();
    int rc, note;
    if (!h) {
        dsm_err(err, "the host barrier is for host-shared memory (DSM_SHARE=host), "
                "which this process has not started");
        return DSM_ESTATE;
    }
    if (__atomic_load_n(&h->c->phase, __ATOMIC_ACQUIRE) != PHASE_RUNNING) {
        dsm_err(err, "the DSM was finalized");     /* started, since h is there */
        return DSM_ESTATE;
    }
    note = core_note_wait(h->c, WAIT_COLL, DSM_COLL_BARRIER,
                          __atomic_load_n(&h->ctrl->gen, __ATOMIC_RELAXED));
    rc = barrier(h, err);
    core_end_wait(h->c, note);
    __atomic_fetch_add(&h->c->stats.sync_wait_ns, now_ns() - t0, __ATOMIC_RELAXED);
    TRACE_EVENT(h->c, DSM_EV_SYNC, DSM_COLL_BARRIER, h->c->rank, 0, t0, now_ns() - t0);
    return rc;
}
