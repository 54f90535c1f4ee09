/* Layer 2: the counted mailboxes of a job on one host (mbox.h's protocol)
 * through the control area of the host's shared memfd (hostmem.h): one
 * struct host_mbox per rank, whose slots count the posts per key.  A post
 * is a few stores under the mailbox's futex mutex and, if a taker of that
 * rank sleeps, one futex wake: no message, no comm thread.  Post and take
 * run in application threads.
 *
 * A taker reads seq and looks for its key under the mutex; the poster adds
 * its count and bumps seq under it, so a post after the look moves seq and
 * the taker's wait on seq returns.  A taker counts itself a sleeper before
 * the futex checks seq, and the poster bumps seq before it reads the
 * sleepers (as hostsync.c's barrier).  A post wakes every sleeping taker of
 * the rank: each looks for its own key.  A post that finds every slot
 * taken waits for a take to free one, as a post waits for room in a full
 * ring (mbox.c): each slot's key has a thread that is to take its posts
 * (sync.py's waiter takes the post of a notify even after its timeout), and
 * a take needs no lock that a poster holds, so the wait ends.  Failures are host_wait_word's: a
 * taker, or a poster waiting for the mutex, looks at the job's state every
 * FAIL_POLL_NS, so a rank that dies holding the mutex, or that was to post,
 * ends the job, named. */
#define _GNU_SOURCE
#include "hostmem.h"

static struct host_mbox *mbox_of(struct hostmem *h, int rank)
{
    return (struct host_mbox *)((char *)h->ctrl + HOST_MBOX_OFF) + rank;
}

/* The slot of key among the first n, or NULL (holding the mutex). */
static struct host_mbox_slot *slot_of(struct host_mbox *b, uint64_t key)
{
    uint32_t i;
    for (i = 0; i < b->n; i++)
        if (b->slots[i].key == key)
            return &b->slots[i];
    return NULL;
}

/* The host's mailboxes serve a job on this one host only: rank is the
 * rank's place on it. */
static int checked(struct hostmem *h, const char *what, char *err)
{
    int rc = host_running(h, "mailboxes", err);
    if (!rc && h->nhosts > 1) {
        dsm_err(err, "%s through the host's mailboxes: the job spans %d hosts (post over "
                "the connections)", what, h->nhosts);
        return DSM_ESTATE;
    }
    return rc;
}

int dsm_host_post(int rank, uint64_t key, char *err)
{
    struct hostmem *h = hostmem_get();
    struct host_mbox *b;
    struct host_mbox_slot *s;
    uint32_t seen;
    int rc = checked(h, "post", err);
    if (rc)
        return rc;
    if (rank < 0 || rank >= h->nlocal) {
        dsm_err(err, "post to rank %d: ranks are 0..%d", rank, h->nlocal - 1);
        return DSM_EINVAL;
    }
    b = mbox_of(h, rank);
    for (;;) {
        if ((rc = host_mutex_take(h, &b->lock, UINT32_MAX, err)))
            return rc;
        seen = __atomic_load_n(&b->freed, __ATOMIC_SEQ_CST);
        if ((s = slot_of(b, key)) || b->n < HOST_MBOX_SLOTS)
            break;
        host_mutex_give(&b->lock);
        if ((rc = host_wait_word(h, &b->freed, seen, &b->full_sleepers, NULL, 0, err)))
            return rc;
    }
    if (!s) {
        s = &b->slots[b->n++];
        *s = (struct host_mbox_slot){ key, 0 };
    }
    s->count++;
    __atomic_add_fetch(&b->seq, 1, __ATOMIC_SEQ_CST);
    host_mutex_give(&b->lock);
    host_wake_sleepers(&b->seq, &b->sleepers);
    return DSM_OK;
}

int dsm_host_take(uint64_t key, uint32_t timeout_ms, char *err)
{
    struct hostmem *h = hostmem_get();
    struct host_mbox *b;
    struct host_mbox_slot *s;
    uint64_t deadline;
    uint32_t seen;
    int rc = checked(h, "take", err);
    if (rc)
        return rc;
    deadline = timeout_ms == UINT32_MAX ? 0 : now_ns() + timeout_ms * 1000000ULL;
    b = mbox_of(h, h->index);
    for (;;) {
        if ((rc = host_mutex_take(h, &b->lock, UINT32_MAX, err)))
            return rc;
        seen = __atomic_load_n(&b->seq, __ATOMIC_SEQ_CST);
        if ((s = slot_of(b, key)) && !--s->count) {
            *s = b->slots[--b->n];
            __atomic_add_fetch(&b->freed, 1, __ATOMIC_SEQ_CST);
        }
        host_mutex_give(&b->lock);
        if (s) {
            host_wake_sleepers(&b->freed, &b->full_sleepers);
            return DSM_OK;
        }
        rc = host_wait_word(h, &b->seq, seen, &b->sleepers, NULL, deadline, err);
        if (rc == DSM_ETIMEDOUT)
            dsm_err(err, "nothing posted for key %llu within %u ms",
                    (unsigned long long)key, timeout_ms);
        if (rc)
            return rc;
    }
}
