/* Layer 2: the locks of a job on one host, through the control area of
 * the host's shared memfd (hostmem.h): one futex word per lock id below
 * HOST_LOCKS, as a futex mutex (0 free, 1 held, 2 held and maybe slept
 * on), and the holding rank beside it.  No message, no comm thread.
 *
 * The semantics are those of locks.c's: a lock is held by a rank (any of
 * its threads may release it), a try never waits, a timed acquire gives
 * up at its deadline.  The memory is one physical copy, so release mode
 * has nothing to carry with a lock: the atomic exchange that takes it and
 * the one that frees it order the holders' accesses.  A waiter looks at
 * the job's state every FAIL_POLL_NS (hostsync.c): a holder that dies
 * ends the job in heartbeat time, as everywhere else. */
#define _GNU_SOURCE
#include "hostmem.h"

static struct host_lock *lock_at(struct hostmem *h, uint32_t lock)
{
    return (struct host_lock *)((char *)h->ctrl + HOST_LOCKS_OFF) + lock;
}

static int checked(struct hostmem *h, uint32_t lock, char *err)
{
    int rc = host_running(h, "locks", err);
    if (!rc && lock >= HOST_LOCKS) {
        dsm_err(err, "lock %u is past the host's %u", lock, HOST_LOCKS);
        return DSM_EINVAL;
    }
    return rc;
}

/* Take the lock for this rank: DSM_OK, DSM_ETIMEDOUT (a try that found it
 * held, or the deadline passed), or DSM_EPEER. */
static int take(struct hostmem *h, struct host_lock *k, uint32_t lock, uint32_t timeout_ms,
                char *err)
{
    int rc = host_mutex_take(h, &k->word, timeout_ms, err);
    if (rc == DSM_ETIMEDOUT)
        dsm_err(err, "lock %u is held elsewhere: %s", lock, timeout_ms ? "timed out" : "busy");
    return rc;
}

int dsm_host_lock_acquire(uint32_t lock, uint32_t timeout_ms, char *err)
{
    struct hostmem *h = hostmem_get();
    struct host_lock *k;
    uint64_t t0 = now_ns();
    int rc, note;
    if ((rc = checked(h, lock, err)))
        return rc;
    k = lock_at(h, lock);
    note = core_note_wait(h->c, WAIT_LOCK, lock, 0);
    rc = take(h, k, lock, timeout_ms, err);
    core_end_wait(h->c, note);
    if (rc)
        return rc;
    __atomic_store_n(&k->owner, h->c->rank + 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->c->stats.lock_wait_ns, now_ns() - t0, __ATOMIC_RELAXED);
    TRACE_EVENT(h->c, DSM_EV_LOCK, lock, h->c->rank, 0, t0, now_ns() - t0);
    return DSM_OK;
}

int dsm_host_lock_release(uint32_t lock, char *err)
{
    struct hostmem *h = hostmem_get();
    struct host_lock *k;
    int rc = checked(h, lock, err), me;
    if (rc)
        return rc;
    k = lock_at(h, lock);
    me = h->c->rank + 1;
    /* only the holder may free it: take its name off first, atomically */
    if (!__atomic_compare_exchange_n(&k->owner, &me, 0, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED)) {
        dsm_err(err, "lock %u is not held by rank %d", lock, h->c->rank);
        return DSM_ENOTHELD;
    }
    host_mutex_give(&k->word);
    return DSM_OK;
}

int dsm_host_lock_held(uint32_t lock)
{
    struct hostmem *h = hostmem_get();
    char err[DSM_ERRLEN];
    return !checked(h, lock, err) &&
           __atomic_load_n(&lock_at(h, lock)->owner, __ATOMIC_RELAXED) == h->c->rank + 1;
}
