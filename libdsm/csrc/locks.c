/* Layer 2: global locks as distributed FIFO queues (the protocol is in
 * locks.h).  Handlers run in the comm thread; steps in application threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "locks.h"

static int home_rank(const struct locks *l, uint32_t lock)
{
    return (int)(lock % (uint32_t)l->c->nranks);
}

static struct lock_tail *tail_of(struct locks *l, uint32_t lock)
{
    return &l->tails[lock / (uint32_t)l->c->nranks];
}

static void send_grant(struct locks *l, uint32_t lock, int to, struct lock_value v)
{
    struct msg m = { .type = DSM_LOCK_GRANT, .origin = (uint16_t)to, .len = v.len,
                     .lk = { .lock = lock } };
    tp_send(l->t, to, &m, v.data);
}

/* Keep a copy of a received value in *v (comm thread). */
static void keep(struct locks *l, struct lock_value *v, const unsigned char *data, uint32_t len)
{
    unsigned char *copy = len ? malloc(len) : NULL;
    if (len && !copy) {
        core_fail(l->c, "out of memory keeping a lock value of %u bytes", len);
        return;
    }
    if (len)
        memcpy(copy, data, len);
    free(v->data);
    *v = (struct lock_value){ copy, len };
}

/* ---------------------------------------------------------- home */

static void on_acq(struct locks *l, const struct msg *m)
{
    struct lock_tail *tail = tail_of(l, m->lk.lock);
    struct msg next = { .type = DSM_LOCK_NEXT, .origin = m->origin,
                        .lk = { .lock = m->lk.lock, .seq = tail->seq, .succ = m->origin } };
    if (tail->rank < 0) {       /* free: the value it keeps goes with it */
        send_grant(l, m->lk.lock, m->origin, tail->value);
        free(tail->value.data);
        tail->value = (struct lock_value){ NULL, 0 };
    } else {
        tp_send(l->t, tail->rank, &next, NULL);
    }
    tail->rank = (int16_t)m->origin;
    tail->seq = m->lk.seq;
}

/* A try takes a free lock as an ACQ would; a held one is answered BUSY. */
static void on_try(struct locks *l, const struct msg *m)
{
    struct msg busy = { .type = DSM_LOCK_BUSY, .origin = m->origin,
                        .lk = { .lock = m->lk.lock, .seq = m->lk.seq } };
    if (tail_of(l, m->lk.lock)->rank < 0)
        on_acq(l, m);
    else
        tp_send(l->t, m->origin, &busy, NULL);
}

/* The holder knew no successor: free the lock if nobody queued since
 * (keeping its value for the next), else the holder hands it on itself. */
static void on_rel(struct locks *l, const struct msg *m, const unsigned char *payload)
{
    struct lock_tail *tail = tail_of(l, m->lk.lock);
    if (tail->rank == m->origin && tail->seq == m->lk.seq) {
        tail->rank = -1;
        keep(l, &tail->value, payload, m->len);
    }
}

/* ---------------------------------------------------------- every rank */

/* A grant for a request whose thread stopped waiting: hand the lock on at
 * once, as locks_give would, with the value it brought.  Caller holds
 * core.mu; it is dropped before sending (a failed send takes it). */
static void pass_on(struct locks *l, uint32_t lock)
{
    struct lock_mine *me = &l->mine[lock];
    struct lock_value v = { NULL, 0 };
    struct msg m = { .type = DSM_LOCK_REL, .origin = (uint16_t)l->c->rank,
                     .lk = { .lock = lock, .seq = me->seq } };
    int to = me->succ >= 0 ? me->succ : home_rank(l, lock);
    if (me->value.len && !(v.data = malloc(me->value.len))) {
        core_fail(l->c, "out of memory copying a lock value of %u bytes", me->value.len);
        core_unlock(l->c);
        return;
    }
    if (me->value.len)
        memcpy(v.data, me->value.data, v.len = me->value.len);
    if (me->succ >= 0)
        m = (struct msg){ .type = DSM_LOCK_GRANT, .origin = (uint16_t)me->succ,
                          .lk = { .lock = lock } };
    m.len = v.len;
    me->abandoned = 0;
    me->state = LOCK_FREE;
    core_unlock(l->c);
    core_wake(l->c);                        /* a thread may wait to ask again */
    tp_send(l->t, to, &m, v.data);
    free(v.data);
}

static void on_grant(struct locks *l, const struct msg *m, const unsigned char *payload)
{
    struct lock_mine *me = &l->mine[m->lk.lock];
    core_lock(l->c);
    keep(l, &me->value, payload, m->len);
    if (me->state != LOCK_ASKING) {
        core_unlock(l->c);
        core_fail(l->c, "protocol error: lock %u granted by rank %d, but not asked for",
                  m->lk.lock, m->from);
        return;
    }
    me->state = LOCK_HELD;
    if (me->abandoned) {
        pass_on(l, m->lk.lock);
        return;
    }
    core_unlock(l->c);
    core_wake(l->c);            /* after the unlock: the woken thread wants core.mu */
}

/* Our try found the lock held. */
static void on_busy(struct locks *l, const struct msg *m)
{
    struct lock_mine *me = &l->mine[m->lk.lock];
    core_lock(l->c);
    if (me->state != LOCK_ASKING || m->lk.seq != me->seq)
        core_fail(l->c, "protocol error: lock %u answered busy by rank %d, but not tried",
                  m->lk.lock, m->from);
    else
        me->state = LOCK_FREE;
    core_unlock(l->c);
    core_wake(l->c);
}

/* Our request `seq` has a successor.  If that tenure is over already (we
 * released without knowing, or have asked again since), hand over now. */
static void on_next(struct locks *l, const struct msg *m)
{
    struct lock_mine *me = &l->mine[m->lk.lock];
    struct lock_value v = { NULL, 0 };
    int now;
    core_lock(l->c);
    now = m->lk.seq != me->seq || me->state == LOCK_FREE;
    if (!now) {
        me->succ = (int16_t)m->lk.succ;
    } else if (me->value.len && !(v.data = malloc(me->value.len))) {
        core_fail(l->c, "out of memory copying a lock value of %u bytes", me->value.len);
        now = 0;
    } else if (me->value.len) { /* our value is still the one we gave back */
        memcpy(v.data, me->value.data, me->value.len);
        v.len = me->value.len;
    }
    core_unlock(l->c);
    if (now)                    /* sent without core.mu: a failed send takes it */
        send_grant(l, m->lk.lock, m->lk.succ, v);
    free(v.data);
}

static void on_message(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct locks *l = ctx;
    int at_home = m->type == DSM_LOCK_ACQ || m->type == DSM_LOCK_REL ||
                  m->type == DSM_LOCK_TRY;
    TRACE(l->c, "%s lock %u seq %u origin %d from %d", msg_name(m->type), m->lk.lock,
          m->lk.seq, m->origin, m->from);
    if (m->lk.lock >= l->n || (at_home && home_rank(l, m->lk.lock) != l->c->rank) ||
        m->lk.succ >= l->c->nranks) {
        core_fail(l->c, "protocol error: %s from rank %d for lock %u", msg_name(m->type),
                  m->from, m->lk.lock);
        return;
    }
    switch (m->type) {
    case DSM_LOCK_ACQ: on_acq(l, m); break;
    case DSM_LOCK_REL: on_rel(l, m, payload); break;
    case DSM_LOCK_GRANT: on_grant(l, m, payload); break;
    case DSM_LOCK_NEXT: on_next(l, m); break;
    case DSM_LOCK_TRY: on_try(l, m); break;
    case DSM_LOCK_BUSY: on_busy(l, m); break;
    }
}

/* ---------------------------------------------------------- application steps */

static int check_lock(struct locks *l, uint32_t lock, char *err)
{
    int rc = core_running(l->c, err);
    if (!rc && lock >= l->n) {
        dsm_err(err, "lock %u does not exist: locks are 0..%u (DSM_LOCKS)", lock, l->n - 1);
        rc = DSM_EINVAL;
    }
    return rc;
}

/* locks_ask with a DSM_LOCK_ACQ or a DSM_LOCK_TRY. */
static int ask(struct locks *l, uint32_t lock, int type, char *err)
{
    struct lock_mine *me = &l->mine[lock < l->n ? lock : 0];
    struct msg m = { .type = (uint8_t)type, .origin = (uint16_t)l->c->rank,
                     .lk = { .lock = lock } };
    int rc;
    if ((rc = check_lock(l, lock, err)))
        return rc;
    if (me->abandoned && type == DSM_LOCK_ACQ) {   /* take the abandoned request over */
        me->abandoned = 0;
        return DSM_OK;
    }
    if (me->state != LOCK_FREE)     /* one request per rank: other threads queue */
        return TP_FULL;
    me->state = LOCK_ASKING;
    me->succ = -1;
    m.lk.seq = ++me->seq;
    if ((rc = tp_send_app(l->t, home_rank(l, lock), &m, NULL)) == TP_FULL) {
        me->state = LOCK_FREE;
        me->seq--;
    }
    return rc == TP_FULL ? TP_FULL : DSM_OK;
}

int locks_ask(struct locks *l, uint32_t lock, char *err)
{
    return ask(l, lock, DSM_LOCK_ACQ, err);
}

int locks_try(struct locks *l, uint32_t lock, char *err)
{
    return ask(l, lock, DSM_LOCK_TRY, err);
}

uint32_t locks_seq(struct locks *l, uint32_t lock)
{
    return l->mine[lock].seq;
}

int locks_held_by(struct locks *l, uint32_t lock, uint32_t seq)
{
    return l->mine[lock].state == LOCK_HELD && l->mine[lock].seq == seq;
}

int locks_busy(struct locks *l, uint32_t lock, uint32_t seq)
{
    return l->mine[lock].seq != seq || l->mine[lock].state == LOCK_FREE;
}

void locks_abandon(struct locks *l, uint32_t lock)
{
    l->mine[lock].abandoned = l->mine[lock].state == LOCK_ASKING;
}

int locks_held(struct locks *l, uint64_t lock)
{
    return l->mine[lock].state == LOCK_HELD;
}

struct lock_value locks_value(struct locks *l, uint32_t lock)
{
    return l->mine[lock].value;
}

int locks_give(struct locks *l, uint32_t lock, struct lock_value value, char *err)
{
    struct lock_mine *me = &l->mine[lock < l->n ? lock : 0];
    struct msg m = { .origin = (uint16_t)l->c->rank, .len = value.len, .lk = { .lock = lock } };
    int rc, to;
    if ((rc = check_lock(l, lock, err)) || me->state != LOCK_HELD) {
        free(value.data);
        if (rc)
            return rc;
        dsm_err(err, "lock %u is not held by rank %d", lock, l->c->rank);
        return DSM_ENOTHELD;
    }
    free(me->value.data);
    me->value = value;
    if (me->succ >= 0) {            /* hand it over: one message */
        m.type = DSM_LOCK_GRANT;
        m.origin = (uint16_t)me->succ;
        to = me->succ;
    } else {                        /* tell the home; a NEXT may be on its way */
        m.type = DSM_LOCK_REL;
        m.lk.seq = me->seq;
        to = home_rank(l, lock);
    }
    me->state = LOCK_FREE;
    if (tp_send_app(l->t, to, &m, value.data) == TP_FULL) {
        me->state = LOCK_HELD;
        return TP_FULL;
    }
    core_wake(l->c);
    return DSM_OK;
}

/* ---------------------------------------------------------- life cycle */

int locks_init(struct locks *l, struct core *c, struct transport *t, uint32_t n, char *err)
{
    uint32_t homed = (n + (uint32_t)c->nranks - 1) / (uint32_t)c->nranks, i;
    int type;
    memset(l, 0, sizeof *l);
    l->c = c;
    l->t = t;
    l->n = n;
    l->mine = calloc(n ? n : 1, sizeof *l->mine);
    l->tails = calloc(homed ? homed : 1, sizeof *l->tails);
    if (!l->mine || !l->tails) {
        locks_free(l);
        return dsm_err_sys(err, ENOMEM, "lock tables for %u locks", n);
    }
    for (i = 0; i < n; i++)
        l->mine[i].succ = -1;
    for (i = 0; i < homed; i++)
        l->tails[i].rank = -1;
    for (type = DSM_LOCK_ACQ; type <= DSM_LOCK_NEXT; type++)
        tp_register(t, type, on_message, l,
                    type == DSM_LOCK_GRANT || type == DSM_LOCK_REL ? LOCK_VALUE_MAX : 0);
    tp_register(t, DSM_LOCK_TRY, on_message, l, 0);
    tp_register(t, DSM_LOCK_BUSY, on_message, l, 0);
    mbox_init(&l->mbox, c, t);
    return DSM_OK;
}

void locks_free(struct locks *l)
{
    uint32_t i, homed = l->c ? (l->n + (uint32_t)l->c->nranks - 1) / (uint32_t)l->c->nranks : 0;
    for (i = 0; l->mine && i < l->n; i++)
        free(l->mine[i].value.data);
    for (i = 0; l->tails && i < homed; i++)
        free(l->tails[i].value.data);
    free(l->mine);
    free(l->tails);
    mbox_free(&l->mbox);
    l->mine = NULL;
    l->tails = NULL;
}
