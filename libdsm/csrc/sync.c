/* Synchronisation: collectives (barrier, bcast) and global locks.
 *
 * A collective is a round trip to rank 0's comm thread: each rank sends
 * DSM_BARRIER tagged with what it called (kind and root); when all have
 * arrived, rank 0 answers DSM_BARRIER_GO.  If the tags differ, or a rank
 * called finalize() meanwhile, the answer carries the error text, so
 * mismatched collectives fail on every rank instead of hanging.
 *
 * Lock k lives with its home rank k % nranks, which keeps the holder and a
 * FIFO of waiting ranks: acquire is one round trip, release one message. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum coll_kind { COLL_BARRIER = 1, COLL_BCAST };
enum lock_state { LOCK_FREE, LOCK_ASKING, LOCK_HELD };

struct lock_waiter {
    uint16_t rank;
    struct lock_waiter *next;
};

struct lock_home {
    int holder;                     /* rank, or -1 */
    struct lock_waiter *head, *tail;
};

/* Rank 0's record of the collective in progress (comm thread only). */
static int arrived, finalized_by = -1;
static uint8_t here[DSM_MAX_RANKS], kinds[DSM_MAX_RANKS];
static uint16_t roots[DSM_MAX_RANKS];

static struct lock_home *homes;     /* the locks homed here (comm thread only) */

int sync_init(uint32_t nlocks, char *err)
{
    uint32_t mine = (nlocks + (uint32_t)st.nranks - 1) / (uint32_t)st.nranks, i;
    st.nlocks = nlocks;
    st.lock_state = calloc(nlocks ? nlocks : 1, 1);
    homes = calloc(mine ? mine : 1, sizeof *homes);
    if (!st.lock_state || !homes) {
        dsm_err(err, "lock tables for %u locks: out of memory", nlocks);
        return DSM_ESYS;
    }
    for (i = 0; i < mine; i++)
        homes[i].holder = -1;
    return DSM_OK;
}

/* ---------------------------------------------------------- collectives */

static const char *describe(char *buf, size_t n, int kind, int root)
{
    if (kind == COLL_BCAST)
        snprintf(buf, n, "bcast(root=%d)", root);
    else
        snprintf(buf, n, "barrier()");
    return buf;
}

/* A collective completed, with an error text or NULL. */
static void collective_done(const char *error, size_t len)
{
    pthread_mutex_lock(&st.mu);
    snprintf(st.coll_error, sizeof st.coll_error, "%.*s", (int)len, error ? error : "");
    st.coll_done++;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
}

/* Rank 0: answer every rank that arrived, with an error text or NULL. */
static void release_all(const char *error)
{
    int r;
    for (r = 0; r < st.nranks; r++) {
        struct msg go = { .type = DSM_BARRIER_GO, .arg = error != NULL };
        if (!here[r])
            continue;
        here[r] = 0;
        if (r == st.rank)   /* messages to ourselves carry no payload */
            collective_done(error, error ? strlen(error) : 0);
        else
            comm_send(r, &go, error, error ? (uint32_t)strlen(error) : 0);
    }
    arrived = 0;
}

static void on_arrive(const struct msg *m)
{
    char text[DSM_ERRLEN], a[48], b[48];
    int r = m->origin;
    if (st.rank != 0 || here[r]) {
        comm_fail("protocol error: unexpected DSM_BARRIER from rank %d", r);
        return;
    }
    here[r] = 1;
    kinds[r] = m->mode;
    roots[r] = (uint16_t)m->arg;
    arrived++;
    if (finalized_by >= 0) {
        snprintf(text, sizeof text, "rank %d called %s after rank %d called finalize()", r,
                 describe(a, sizeof a, kinds[r], roots[r]), finalized_by);
        release_all(text);
        return;
    }
    if (arrived < st.nranks)
        return;
    for (r = 1; r < st.nranks; r++)
        if (kinds[r] != kinds[0] || roots[r] != roots[0])
            break;
    if (r == st.nranks) {
        release_all(NULL);
        return;
    }
    snprintf(text, sizeof text, "ranks called different collectives: rank 0 called %s, "
             "rank %d called %s", describe(a, sizeof a, kinds[0], roots[0]), r,
             describe(b, sizeof b, kinds[r], roots[r]));
    release_all(text);
}

/* Rank 0 learns that a rank finalized: whoever waits in a collective now
 * waits in vain. */
void sync_finalized(int rank)
{
    char text[DSM_ERRLEN], a[48];
    int r;
    if (st.rank != 0 || finalized_by >= 0)
        return;
    finalized_by = rank;
    for (r = 0; r < st.nranks && !here[r]; r++)
        ;
    if (r == st.nranks)
        return;
    snprintf(text, sizeof text, "rank %d called finalize() while rank %d waits in %s", rank, r,
             describe(a, sizeof a, kinds[r], roots[r]));
    release_all(text);
}

static void on_go(const struct msg *m, const unsigned char *payload)
{
    if (m->arg && !m->len)
        collective_done("collective failed", sizeof "collective failed" - 1);
    else
        collective_done(m->arg ? (const char *)payload : NULL, m->len);
}

/* Wait, holding st.mu, until cond() holds or the job failed. */
static int wait_until(int (*cond)(const void *), const void *arg, char *err)
{
    dsm_spin(cond, arg, 1);
    while (!cond(arg) && !st.failed)
        pthread_cond_wait(&st.cv, &st.mu);
    if (cond(arg))
        return DSM_OK;
    dsm_err(err, "%s", st.failure);
    return DSM_EPEER;
}

static int coll_reached(const void *seq)
{
    return st.coll_done >= *(const uint64_t *)seq;
}

/* Arrive at a collective and wait for rank 0's answer; *seq gets its number. */
static int collective(int kind, int root, uint64_t *seq, char *err)
{
    struct msg m = { .type = DSM_BARRIER, .mode = (uint8_t)kind, .origin = (uint16_t)st.rank,
                     .arg = (uint64_t)root };
    int rc;
    if ((rc = dsm_running(err)))
        return rc;
    pthread_mutex_lock(&st.mu);
    m.page = *seq = ++st.coll_seq;
    pthread_mutex_unlock(&st.mu);
    if ((rc = comm_send_app(0, &m, NULL, 0))) {
        dsm_err(err, "%s", st.failure);
        return rc;
    }
    pthread_mutex_lock(&st.mu);
    rc = wait_until(coll_reached, seq, err);
    if (!rc && st.coll_error[0]) {
        dsm_err(err, "%s", st.coll_error);
        rc = DSM_ECOLL;
    }
    pthread_mutex_unlock(&st.mu);
    return rc;
}

int dsm_barrier(char *err)
{
    uint64_t seq;
    return collective(COLL_BARRIER, 0, &seq, err);
}

static void on_bcast(const struct msg *m, const unsigned char *payload)
{
    struct bcast_value *v = malloc(sizeof *v), **pp;
    if (!v || !(v->data = malloc(m->len ? m->len : 1))) {
        free(v);
        comm_fail("out of memory receiving a bcast of %u bytes", m->len);
        return;
    }
    memcpy(v->data, payload, m->len);
    v->len = m->len;
    v->seq = m->page;
    v->next = NULL;
    pthread_mutex_lock(&st.mu);
    for (pp = &st.inbox; *pp; pp = &(*pp)->next)
        ;
    *pp = v;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
}

static int inbox_ready(const void *unused)
{
    return st.inbox != NULL;
}

int dsm_bcast(int root, const void *data, uint32_t len, void **out, uint32_t *out_len,
              char *err)
{
    struct bcast_value *v;
    uint64_t seq;
    int r, rc;
    *out = NULL;
    *out_len = 0;
    if (root < 0 || root >= st.nranks || len > DSM_MAX_BCAST) {
        dsm_err(err, "bcast from root %d of %u bytes: the root must be 0..%d and the value "
                "at most %u bytes", root, len, st.nranks - 1, DSM_MAX_BCAST);
        return DSM_EINVAL;
    }
    if ((rc = collective(COLL_BCAST, root, &seq, err)))
        return rc;
    if (root == st.rank) {
        for (r = 0; r < st.nranks && !rc; r++) {
            struct msg m = { .type = DSM_BCAST, .origin = (uint16_t)root, .page = seq };
            if (r != root && (rc = comm_send_app(r, &m, data, len)))
                dsm_err(err, "%s", st.failure);
        }
        return rc;
    }
    pthread_mutex_lock(&st.mu);
    if (!(rc = wait_until(inbox_ready, NULL, err))) {
        v = st.inbox;
        st.inbox = v->next;
        if (v->seq != seq) {
            dsm_err(err, "protocol error: bcast value of collective %llu arrived during %llu",
                    (unsigned long long)v->seq, (unsigned long long)seq);
            rc = DSM_EPEER;
            free(v->data);
        } else {
            *out = v->data;
            *out_len = v->len;
        }
        free(v);
    }
    pthread_mutex_unlock(&st.mu);
    return rc;
}

void dsm_buffer_free(void *buf)
{
    free(buf);
}

/* ---------------------------------------------------------- locks */

static struct lock_home *home_of(uint64_t lock)
{
    return &homes[lock / (uint64_t)st.nranks];
}

static void grant(uint64_t lock, int rank)
{
    struct msg m = { .type = DSM_LOCK_GRANT, .origin = (uint16_t)rank, .page = lock };
    home_of(lock)->holder = rank;
    comm_send(rank, &m, NULL, 0);
}

static void on_lock_acq(const struct msg *m)
{
    struct lock_home *h = home_of(m->page);
    struct lock_waiter *w;
    if (h->holder < 0) {
        grant(m->page, m->origin);
        return;
    }
    if (!(w = malloc(sizeof *w))) {
        comm_fail("out of memory queueing for lock %llu", (unsigned long long)m->page);
        return;
    }
    w->rank = m->origin;
    w->next = NULL;
    if (h->tail)
        h->tail->next = w;
    else
        h->head = w;
    h->tail = w;
}

static void on_lock_rel(const struct msg *m)
{
    struct lock_home *h = home_of(m->page);
    struct lock_waiter *w = h->head;
    if (h->holder != m->origin) {
        comm_fail("protocol error: rank %d released lock %llu held by %d", m->origin,
                  (unsigned long long)m->page, h->holder);
        return;
    }
    h->holder = -1;
    if (!w)
        return;
    h->head = w->next;
    if (!h->head)
        h->tail = NULL;
    grant(m->page, w->rank);
    free(w);
}

static void on_lock_grant(const struct msg *m)
{
    pthread_mutex_lock(&st.mu);
    st.lock_state[m->page] = LOCK_HELD;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
}

static int lock_free(const void *lock)
{
    return st.lock_state[*(const uint32_t *)lock] == LOCK_FREE;
}

static int lock_held(const void *lock)
{
    return st.lock_state[*(const uint32_t *)lock] == LOCK_HELD;
}

static int check_lock(uint32_t lock, char *err)
{
    int rc = dsm_running(err);
    if (!rc && lock >= st.nlocks) {
        dsm_err(err, "lock %u does not exist: locks are 0..%u (DSM_LOCKS)", lock,
                st.nlocks - 1);
        rc = DSM_EINVAL;
    }
    return rc;
}

int dsm_lock_acquire(uint32_t lock, char *err)
{
    struct msg m = { .type = DSM_LOCK_ACQ, .origin = (uint16_t)st.rank, .page = lock };
    int rc;
    if ((rc = check_lock(lock, err)))
        return rc;
    pthread_mutex_lock(&st.mu);     /* one request per rank: other threads queue here */
    if (!(rc = wait_until(lock_free, &lock, err)))
        st.lock_state[lock] = LOCK_ASKING;
    pthread_mutex_unlock(&st.mu);
    if (rc)
        return rc;
    if ((rc = comm_send_app((int)(lock % (uint32_t)st.nranks), &m, NULL, 0))) {
        dsm_err(err, "%s", st.failure);
        return rc;
    }
    pthread_mutex_lock(&st.mu);
    rc = wait_until(lock_held, &lock, err);
    pthread_mutex_unlock(&st.mu);
    return rc;
}

int dsm_lock_release(uint32_t lock, char *err)
{
    struct msg m = { .type = DSM_LOCK_REL, .origin = (uint16_t)st.rank, .page = lock };
    int rc;
    if ((rc = check_lock(lock, err)))
        return rc;
    pthread_mutex_lock(&st.mu);
    if (st.lock_state[lock] != LOCK_HELD) {
        pthread_mutex_unlock(&st.mu);
        dsm_err(err, "lock %u is not held by rank %d", lock, st.rank);
        return DSM_ENOTHELD;
    }
    st.lock_state[lock] = LOCK_FREE;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
    if ((rc = comm_send_app((int)(lock % (uint32_t)st.nranks), &m, NULL, 0)))
        dsm_err(err, "%s", st.failure);
    return rc;
}

/* Run one collective or lock message (comm thread). */
void sync_dispatch(const struct msg *m, const unsigned char *payload)
{
    TRACE("%s #%llu origin %d from %d", msg_name(m->type), (unsigned long long)m->page,
          m->origin, m->from);
    switch (m->type) {
    case DSM_BARRIER: on_arrive(m); break;
    case DSM_BARRIER_GO: on_go(m, payload); break;
    case DSM_BCAST: on_bcast(m, payload); break;
    case DSM_LOCK_ACQ:
    case DSM_LOCK_REL:
        if (m->page >= st.nlocks || (int)(m->page % (uint64_t)st.nranks) != st.rank) {
            comm_fail("protocol error: %s for lock %llu, not homed here", msg_name(m->type),
                      (unsigned long long)m->page);
            return;
        }
        (m->type == DSM_LOCK_ACQ ? on_lock_acq : on_lock_rel)(m);
        break;
    case DSM_LOCK_GRANT:
        if (m->page < st.nlocks)
            on_lock_grant(m);
        break;
    default:
        comm_fail("protocol error: unexpected %s from rank %d", msg_name(m->type), m->from);
    }
}
