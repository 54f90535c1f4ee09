/* Layer 2: collectives and locks (the protocol is described in sync.h).
 * The handlers run in the comm thread; the steps and blocking calls in
 * application threads. */
#define _GNU_SOURCE
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "sync.h"

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
static void collective_done(struct sync *s, const char *error, size_t len)
{
    pthread_mutex_lock(&s->c->mu);
    snprintf(s->coll_error, sizeof s->coll_error, "%.*s", (int)len, error ? error : "");
    s->coll_done++;
    pthread_cond_broadcast(&s->c->cv);
    pthread_mutex_unlock(&s->c->mu);
}

/* Rank 0: answer every rank that arrived, with an error text or NULL. */
static void release_all(struct sync *s, const char *error)
{
    struct coll_root *cr = &s->root;
    uint32_t len = error ? (uint32_t)strlen(error) : 0;
    int r;
    for (r = 0; r < s->c->nranks; r++) {
        struct msg go = { .type = DSM_BARRIER_GO, .origin = (uint16_t)r, .len = len,
                          .coll = { .epoch = cr->epochs[r], .failed = error != NULL } };
        if (!cr->here[r])
            continue;
        cr->here[r] = 0;
        if (r == s->c->rank)    /* messages to ourselves carry no payload */
            collective_done(s, error, len);
        else
            tp_send(s->t, r, &go, error);
    }
    cr->arrived = 0;
}

static void on_arrive(struct sync *s, const struct msg *m)
{
    struct coll_root *cr = &s->root;
    char text[DSM_ERRLEN], a[48], b[48];
    int r = m->origin;
    if (s->c->rank != 0 || cr->here[r]) {
        core_fail(s->c, "protocol error: unexpected DSM_BARRIER from rank %d", r);
        return;
    }
    cr->here[r] = 1;
    cr->kinds[r] = m->coll.kind;
    cr->roots[r] = m->coll.root;
    cr->epochs[r] = m->coll.epoch;
    cr->arrived++;
    if (cr->finalized_by >= 0) {
        snprintf(text, sizeof text, "rank %d called %s after rank %d called finalize()", r,
                 describe(a, sizeof a, cr->kinds[r], cr->roots[r]), cr->finalized_by);
        release_all(s, text);
        return;
    }
    if (cr->arrived < s->c->nranks)
        return;
    for (r = 1; r < s->c->nranks; r++)
        if (cr->kinds[r] != cr->kinds[0] || cr->roots[r] != cr->roots[0] ||
            cr->epochs[r] != cr->epochs[0])
            break;
    if (r == s->c->nranks) {
        release_all(s, NULL);
        return;
    }
    snprintf(text, sizeof text, "ranks called different collectives: rank 0 called %s, "
             "rank %d called %s", describe(a, sizeof a, cr->kinds[0], cr->roots[0]), r,
             describe(b, sizeof b, cr->kinds[r], cr->roots[r]));
    release_all(s, text);
}

/* Rank 0 learns that a rank finalized: whoever waits in a collective now
 * waits in vain. */
static void on_finalized(void *ctx, int rank)
{
    struct sync *s = ctx;
    struct coll_root *cr = &s->root;
    char text[DSM_ERRLEN], a[48];
    int r;
    if (s->c->rank != 0 || cr->finalized_by >= 0)
        return;
    cr->finalized_by = rank;
    for (r = 0; r < s->c->nranks && !cr->here[r]; r++)
        ;
    if (r == s->c->nranks)
        return;
    snprintf(text, sizeof text, "rank %d called finalize() while rank %d waits in %s", rank, r,
             describe(a, sizeof a, cr->kinds[r], cr->roots[r]));
    release_all(s, text);
}

static void on_go(struct sync *s, const struct msg *m, const unsigned char *payload)
{
    if (m->coll.failed && !m->len)
        collective_done(s, "collective failed", sizeof "collective failed" - 1);
    else
        collective_done(s, m->coll.failed ? (const char *)payload : NULL, m->len);
}

int sync_coll_arrive(struct sync *s, int kind, int root, uint64_t *epoch, char *err)
{
    struct msg m = { .type = DSM_BARRIER, .origin = (uint16_t)s->c->rank,
                     .coll = { .epoch = s->coll_seq + 1, .root = (uint16_t)root,
                               .kind = (uint8_t)kind } };
    int rc;
    if ((rc = core_running(s->c, err)))
        return rc;
    *epoch = ++s->coll_seq;
    if ((rc = tp_send_app(s->t, 0, &m, NULL)) == TP_FULL)
        s->coll_seq--;
    return rc == TP_FULL ? TP_FULL : DSM_OK;
}

int sync_coll_reached(struct sync *s, uint64_t epoch)
{
    return s->coll_done >= epoch;
}

int sync_coll_result(struct sync *s, char *err)
{
    if (!s->coll_error[0])
        return DSM_OK;
    dsm_err(err, "%s", s->coll_error);
    return DSM_ECOLL;
}

/* Blocking calls wait until pred(s, arg) holds (caller holds core.mu). */
struct until {
    struct sync *s;
    int (*pred)(struct sync *, uint64_t);
    uint64_t arg;
};

static int until_ready(void *p)
{
    struct until *u = p;
    return u->pred(u->s, u->arg);
}

static int wait_for(struct sync *s, int (*pred)(struct sync *, uint64_t), uint64_t arg,
                    char *err)
{
    struct until u = { s, pred, arg };
    return core_wait(s->c, until_ready, &u, 1, err);
}

/* Arrive at a collective and wait for rank 0's answer; *epoch gets its number. */
static int collective(struct sync *s, int kind, int root, uint64_t *epoch, char *err)
{
    int rc;
    pthread_mutex_lock(&s->c->mu);
    while ((rc = sync_coll_arrive(s, kind, root, epoch, err)) == TP_FULL && !s->c->failed)
        pthread_cond_wait(&s->c->cv, &s->c->mu);
    if (rc == TP_FULL) {
        dsm_err(err, "%s", s->c->failure);
        rc = DSM_EPEER;
    }
    if (!rc && !(rc = wait_for(s, sync_coll_reached, *epoch, err)))
        rc = sync_coll_result(s, err);
    pthread_mutex_unlock(&s->c->mu);
    return rc;
}

int sync_barrier(struct sync *s, char *err)
{
    uint64_t epoch;
    return collective(s, COLL_BARRIER, 0, &epoch, err);
}

static void on_bcast(struct sync *s, const struct msg *m, const unsigned char *payload)
{
    struct bcast_value *v = malloc(sizeof *v), **pp;
    if (!v || !(v->data = malloc(m->len ? m->len : 1))) {
        free(v);
        core_fail(s->c, "out of memory receiving a bcast of %u bytes", m->len);
        return;
    }
    memcpy(v->data, payload, m->len);
    v->len = m->len;
    v->epoch = m->coll.epoch;
    v->next = NULL;
    pthread_mutex_lock(&s->c->mu);
    for (pp = &s->inbox; *pp; pp = &(*pp)->next)
        ;
    *pp = v;
    pthread_cond_broadcast(&s->c->cv);
    pthread_mutex_unlock(&s->c->mu);
}

static int inbox_ready(struct sync *s, uint64_t unused)
{
    return s->inbox != NULL;
}

int sync_bcast(struct sync *s, int root, const void *data, uint32_t len, void **out,
               uint32_t *out_len, char *err)
{
    struct bcast_value *v;
    uint64_t epoch;
    int r, rc;
    *out = NULL;
    *out_len = 0;
    if ((rc = collective(s, COLL_BCAST, root, &epoch, err)))
        return rc;
    pthread_mutex_lock(&s->c->mu);
    if (root == s->c->rank) {
        for (r = 0; r < s->c->nranks; r++) {
            struct msg m = { .type = DSM_BCAST, .origin = (uint16_t)root, .len = len,
                             .coll = { .epoch = epoch, .root = (uint16_t)root,
                                       .kind = COLL_BCAST } };
            if (r != root)
                tp_send_app(s->t, r, &m, data);
        }
        if (s->c->failed) {
            dsm_err(err, "%s", s->c->failure);
            rc = DSM_EPEER;
        }
    } else if (!(rc = wait_for(s, inbox_ready, 0, err))) {
        v = s->inbox;
        s->inbox = v->next;
        if (v->epoch != epoch) {
            dsm_err(err, "protocol error: bcast value of collective %llu arrived during %llu",
                    (unsigned long long)v->epoch, (unsigned long long)epoch);
            rc = DSM_EPEER;
            free(v->data);
        } else {
            *out = v->data;
            *out_len = v->len;
        }
        free(v);
    }
    pthread_mutex_unlock(&s->c->mu);
    return rc;
}

/* ---------------------------------------------------------- locks */

static struct lock_home *home_of(struct sync *s, uint32_t lock)
{
    return &s->homes[lock / (uint32_t)s->c->nranks];
}

static int lock_home_rank(struct sync *s, uint32_t lock)
{
    return (int)(lock % (uint32_t)s->c->nranks);
}

static void grant(struct sync *s, uint32_t lock, int rank)
{
    struct msg m = { .type = DSM_LOCK_GRANT, .origin = (uint16_t)rank, .lk = { lock } };
    home_of(s, lock)->holder = rank;
    tp_send(s->t, rank, &m, NULL);
}

static void on_lock_acq(struct sync *s, const struct msg *m)
{
    struct lock_home *h = home_of(s, m->lk.lock);
    struct lock_waiter *w;
    if (h->holder < 0) {
        grant(s, m->lk.lock, m->origin);
        return;
    }
    if (!(w = malloc(sizeof *w))) {
        core_fail(s->c, "out of memory queueing for lock %u", m->lk.lock);
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

static void on_lock_rel(struct sync *s, const struct msg *m)
{
    struct lock_home *h = home_of(s, m->lk.lock);
    struct lock_waiter *w = h->head;
    if (h->holder != m->origin) {
        core_fail(s->c, "protocol error: rank %d released lock %u held by %d", m->origin,
                  m->lk.lock, h->holder);
        return;
    }
    h->holder = -1;
    if (!w)
        return;
    h->head = w->next;
    if (!h->head)
        h->tail = NULL;
    grant(s, m->lk.lock, w->rank);
    free(w);
}

static void on_lock_grant(struct sync *s, const struct msg *m)
{
    pthread_mutex_lock(&s->c->mu);
    if (s->lock_state[m->lk.lock] != LOCK_ASKING) {
        pthread_mutex_unlock(&s->c->mu);
        core_fail(s->c, "protocol error: lock %u granted by rank %d, but not asked for",
                  m->lk.lock, m->from);
        return;
    }
    s->lock_state[m->lk.lock] = LOCK_HELD;
    pthread_cond_broadcast(&s->c->cv);
    pthread_mutex_unlock(&s->c->mu);
}

static int check_lock(struct sync *s, uint32_t lock, char *err)
{
    int rc = core_running(s->c, err);
    if (!rc && lock >= s->nlocks) {
        dsm_err(err, "lock %u does not exist: locks are 0..%u (DSM_LOCKS)", lock,
                s->nlocks - 1);
        rc = DSM_EINVAL;
    }
    return rc;
}

int sync_lock_ask(struct sync *s, uint32_t lock, char *err)
{
    struct msg m = { .type = DSM_LOCK_ACQ, .origin = (uint16_t)s->c->rank, .lk = { lock } };
    int rc;
    if ((rc = check_lock(s, lock, err)))
        return rc;
    if (s->lock_state[lock] != LOCK_FREE)   /* one request per rank: other threads queue */
        return TP_FULL;
    s->lock_state[lock] = LOCK_ASKING;
    if ((rc = tp_send_app(s->t, lock_home_rank(s, lock), &m, NULL)) == TP_FULL)
        s->lock_state[lock] = LOCK_FREE;
    return rc == TP_FULL ? TP_FULL : DSM_OK;
}

int sync_lock_held(struct sync *s, uint64_t lock)
{
    return s->lock_state[lock] == LOCK_HELD;
}

int sync_lock_give(struct sync *s, uint32_t lock, char *err)
{
    struct msg m = { .type = DSM_LOCK_REL, .origin = (uint16_t)s->c->rank, .lk = { lock } };
    int rc;
    if ((rc = check_lock(s, lock, err)))
        return rc;
    if (s->lock_state[lock] != LOCK_HELD) {
        dsm_err(err, "lock %u is not held by rank %d", lock, s->c->rank);
        return DSM_ENOTHELD;
    }
    s->lock_state[lock] = LOCK_FREE;
    if (tp_send_app(s->t, lock_home_rank(s, lock), &m, NULL) == TP_FULL) {
        s->lock_state[lock] = LOCK_HELD;
        return TP_FULL;
    }
    pthread_cond_broadcast(&s->c->cv);
    return DSM_OK;
}

/* Repeat a step while it answers TP_FULL (another thread of ours holds the
 * way, or the ring is full); both wake core.cv when they change. */
static int step_until_done(struct sync *s, int (*step)(struct sync *, uint32_t, char *),
                           uint32_t lock, char *err)
{
    int rc;
    while ((rc = step(s, lock, err)) == TP_FULL && !s->c->failed)
        pthread_cond_wait(&s->c->cv, &s->c->mu);
    if (rc == TP_FULL) {
        dsm_err(err, "%s", s->c->failure);
        rc = DSM_EPEER;
    }
    return rc;
}

int sync_lock_acquire(struct sync *s, uint32_t lock, char *err)
{
    int rc;
    pthread_mutex_lock(&s->c->mu);
    if (!(rc = step_until_done(s, sync_lock_ask, lock, err)))
        rc = wait_for(s, sync_lock_held, lock, err);
    pthread_mutex_unlock(&s->c->mu);
    return rc;
}

int sync_lock_release(struct sync *s, uint32_t lock, char *err)
{
    int rc;
    pthread_mutex_lock(&s->c->mu);
    rc = step_until_done(s, sync_lock_give, lock, err);
    pthread_mutex_unlock(&s->c->mu);
    return rc;
}

/* ---------------------------------------------------------- the table */

static void on_message(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct sync *s = ctx;
    TRACE(s->c, "%s origin %d from %d", msg_name(m->type), m->origin, m->from);
    switch (m->type) {
    case DSM_BARRIER: on_arrive(s, m); return;
    case DSM_BARRIER_GO: on_go(s, m, payload); return;
    case DSM_BCAST: on_bcast(s, m, payload); return;
    }
    if (m->lk.lock >= s->nlocks ||
        ((m->type == DSM_LOCK_ACQ || m->type == DSM_LOCK_REL) &&
         lock_home_rank(s, m->lk.lock) != s->c->rank)) {
        core_fail(s->c, "protocol error: %s for lock %u, not homed here", msg_name(m->type),
                  m->lk.lock);
        return;
    }
    if (m->type == DSM_LOCK_ACQ)
        on_lock_acq(s, m);
    else if (m->type == DSM_LOCK_REL)
        on_lock_rel(s, m);
    else
        on_lock_grant(s, m);
}

int sync_init(struct sync *s, struct core *c, struct transport *t, uint32_t nlocks, char *err)
{
    uint32_t mine = (nlocks + (uint32_t)c->nranks - 1) / (uint32_t)c->nranks, i;
    int type;
    memset(s, 0, sizeof *s);
    s->c = c;
    s->t = t;
    s->root.finalized_by = -1;
    s->nlocks = nlocks;
    s->lock_state = calloc(nlocks ? nlocks : 1, 1);
    s->homes = calloc(mine ? mine : 1, sizeof *s->homes);
    if (!s->lock_state || !s->homes) {
        sync_free(s);
        return dsm_err_sys(err, ENOMEM, "lock tables for %u locks", nlocks);
    }
    for (i = 0; i < mine; i++)
        s->homes[i].holder = -1;
    tp_register(t, DSM_BARRIER, on_message, s, 0);
    tp_register(t, DSM_BARRIER_GO, on_message, s, DSM_ERRLEN - 1);
    tp_register(t, DSM_BCAST, on_message, s, DSM_MAX_BCAST);
    for (type = DSM_LOCK_ACQ; type <= DSM_LOCK_REL; type++)
        tp_register(t, type, on_message, s, 0);
    tp_on_finalized(t, on_finalized, s);
    return DSM_OK;
}

void sync_free(struct sync *s)
{
    uint32_t i, mine = s->homes ? (s->nlocks + (uint32_t)s->c->nranks - 1) /
                                  (uint32_t)s->c->nranks : 0;
    for (i = 0; i < mine; i++)
        while (s->homes[i].head) {
            struct lock_waiter *w = s->homes[i].head;
            s->homes[i].head = w->next;
            free(w);
        }
    while (s->inbox) {
        struct bcast_value *v = s->inbox;
        s->inbox = v->next;
        free(v->data);
        free(v);
    }
    free(s->lock_state);
    free(s->homes);
    s->lock_state = NULL;
    s->homes = NULL;
}
