/* Layer 2: counted mailboxes (the protocol is in mbox.h).  The handler
 * runs in the comm thread; post and take in application threads. */
#define _GNU_SOURCE
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include "mbox.h"

/* The slot of key, or NULL (caller holds core.mu). */
static struct mbox_slot *slot_of(struct mbox *b, uint64_t key)
{
    size_t i;
    for (i = 0; i < b->n; i++)
        if (b->slots[i].key == key)
            return &b->slots[i];
    return NULL;
}

/* A post came: count it, wake the takers (comm thread). */
static void on_post(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct mbox *b = ctx;
    struct mbox_slot *s, *grown;
    uint64_t key;
    if (m->len != sizeof key) {
        core_fail(b->c, "protocol error: DSM_POST from rank %d with %u bytes", m->from, m->len);
        return;
    }
    memcpy(&key, payload, sizeof key);
    key = le64toh(key);
    core_lock(b->c);
    if (!(s = slot_of(b, key)) && b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        if (!(grown = realloc(b->slots, cap * sizeof *grown))) {
            core_fail(b->c, "out of memory counting a post for key %llu",
                      (unsigned long long)key);
            core_unlock(b->c);
            return;
        }
        b->slots = grown;
        b->cap = cap;
    }
    if (!s) {
        s = &b->slots[b->n++];
        *s = (struct mbox_slot){ key, 0 };
    }
    s->count++;
    core_unlock(b->c);
    core_wake(b->c);
}

int mbox_send(struct mbox *b, int rank, uint64_t key, char *err)
{
    struct msg m = { .type = DSM_POST, .origin = (uint16_t)b->c->rank, .len = sizeof key };
    uint64_t wire = htole64(key);
    int rc;
    if ((rc = core_running(b->c, err)))
        return rc;
    if (rank < 0 || rank >= b->c->nranks) {
        dsm_err(err, "post to rank %d: ranks are 0..%d", rank, b->c->nranks - 1);
        return DSM_EINVAL;
    }
    return tp_send_app(b->t, rank, &m, &wire) == TP_FULL ? TP_FULL : DSM_OK;
}

int mbox_post(struct mbox *b, int rank, uint64_t key, char *err)
{
    uint32_t seq;
    int rc;
    core_lock(b->c);
    for (;;) {
        seq = core_seq(b->c);
        if ((rc = mbox_send(b, rank, key, err)) != TP_FULL || core_failed(b->c))
            break;
        core_sleep(b->c, seq, 0);
    }
    if (rc == TP_FULL) {
        dsm_err(err, "%s", b->c->failure);
        rc = DSM_EPEER;
    }
    core_unlock(b->c);
    return rc;
}

int mbox_take_one(struct mbox *b, uint64_t key)
{
    struct mbox_slot *s = slot_of(b, key);
    if (!s)
        return 0;
    if (!--s->count)
        *s = b->slots[--b->n];
    return 1;
}

int mbox_take(struct mbox *b, uint64_t key, uint32_t timeout_ms, char *err)
{
    struct core *c = b->c;
    uint64_t deadline = timeout_ms == UINT32_MAX ? 0 : now_ns() + timeout_ms * 1000000ULL;
    uint32_t seq;
    int rc;
    core_lock(c);
    for (;;) {
        seq = core_seq(c);
        if ((rc = core_running(c, err)) || mbox_take_one(b, key))
            break;
        if (core_failed(c)) {
            dsm_err(err, "%s", c->failure);
            rc = DSM_EPEER;
        } else if (core_sleep_until(c, seq, deadline)) {
            dsm_err(err, "nothing posted for key %llu within %u ms",
                    (unsigned long long)key, timeout_ms);
            rc = DSM_ETIMEDOUT;
        }
        if (rc)
            break;
    }
    core_unlock(c);
    return rc;
}

void mbox_init(struct mbox *b, struct core *c, struct transport *t)
{
    memset(b, 0, sizeof *b);
    b->c = c;
    b->t = t;
    tp_register(t, DSM_POST, on_post, b, sizeof(uint64_t));
}

void mbox_free(struct mbox *b)
{
    free(b->slots);
    b->slots = NULL;
    b->n = b->cap = 0;
}
