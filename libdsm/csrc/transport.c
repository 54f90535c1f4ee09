/* Layer 1: the common part of the transport: the handler table, the hooks,
 * the ring from application threads and the queue to ourselves.  Both
 * backends (comm.c, the simulator) deliver through here, so the order in
 * which handlers, flushes and self-messages run is the same in both. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include "transport.h"

void tp_init(struct transport *t, struct core *c, const struct transport_ops *ops,
             void *backend)
{
    memset(t, 0, sizeof *t);
    t->core = c;
    t->ops = ops;
    t->backend = backend;
}

void tp_free(struct transport *t)
{
    struct ring_item left[DSM_RING_CAP];
    unsigned i, n;
    int full;
    for (i = 0; i < t->selfq_len; i++)
        free(t->selfq[i].payload);
    n = ring_take(&t->ring, left, DSM_RING_CAP, &full);
    for (i = 0; i < n; i++)
        free(left[i].payload);
    free(t->selfq);
    t->selfq = NULL;
    t->selfq_len = t->selfq_cap = 0;
}

void tp_register(struct transport *t, int type, tp_handler fn, void *ctx, uint32_t max_len)
{
    t->table[type] = (struct tp_entry){ .fn = fn, .ctx = ctx, .max_len = max_len };
}

void tp_sink(struct transport *t, int type, tp_sink_fn fn)
{
    t->table[type].sink = fn;
}

static void add_hook(struct tp_hooks *h, tp_hook fn, void *ctx)
{
    if (h->n == TP_HOOKS)
        dsm_panic(-1, "more than %d transport hooks registered", TP_HOOKS);
    h->fn[h->n] = fn;
    h->ctx[h->n++] = ctx;
}

void tp_on_flush(struct transport *t, tp_hook fn, void *ctx)
{
    add_hook(&t->flush, fn, ctx);
}

void tp_on_finalized(struct transport *t, tp_handler fn, void *ctx)
{
    if (t->nfinalized == TP_HOOKS)
        dsm_panic(-1, "more than %d finalize handlers registered", TP_HOOKS);
    t->finalized[t->nfinalized] = fn;
    t->finalized_ctx[t->nfinalized++] = ctx;
}

static void run_hooks(const struct tp_hooks *h, int arg)
{
    unsigned i;
    for (i = 0; i < h->n; i++)
        h->fn[i](h->ctx[i], arg);
}

/* A copy of a payload for a message to ourselves: 0, or -1 (out of memory,
 * recorded). */
static int copy_payload(struct transport *t, const struct msg *m, const void *payload,
                        unsigned char **out)
{
    *out = NULL;
    if (!m->len)
        return 0;
    if ((*out = malloc(m->len))) {
        memcpy(*out, payload, m->len);
        return 0;
    }
    core_fail(t->core, "out of memory keeping %s for ourselves", msg_name(m->type));
    return -1;
}

void tp_send(struct transport *t, int dst, struct msg *m, const void *payload)
{
    unsigned char *copy;
    if (dst != t->core->rank) {
        t->ops->send(t, dst, m, payload);
        return;
    }
    if (t->selfq_len == t->selfq_cap) {
        size_t cap = t->selfq_cap ? t->selfq_cap * 2 : 64;
        struct ring_item *q = realloc(t->selfq, cap * sizeof *q);
        if (!q) {
            core_fail(t->core, "out of memory queueing %s", msg_name(m->type));
            return;
        }
        t->selfq = q;
        t->selfq_cap = cap;
    }
    if (copy_payload(t, m, payload, &copy))
        return;
    m->from = (uint16_t)dst;
    t->selfq[t->selfq_len++] = (struct ring_item){ *m, copy };
}

int tp_send_app(struct transport *t, int dst, struct msg *m, const void *payload)
{
    struct core *c = t->core;
    unsigned char *copy;
    if (dst == c->rank) {
        if (copy_payload(t, m, payload, &copy))
            return 0;
        if (ring_put(&t->ring, m, copy)) {
            free(copy);
            c->stats.ring_full++;
            return TP_FULL;
        }
        t->ops->wake(t);
        return 0;
    }
    core_unlock(c);
    t->ops->send_app(t, dst, m, payload);
    core_lock(c);
    return TP_DROPPED;
}

int tp_check(struct transport *t, const struct msg *m)
{
    struct core *c = t->core;
    if (m->type == 0 || m->type >= DSM_MSG_MAX || !t->table[m->type].fn ||
        m->len > t->table[m->type].max_len || m->origin >= c->nranks) {
        core_fail(c, "protocol error from rank %d: type %d, origin %d, %u payload bytes",
                  m->from, m->type, m->origin, m->len);
        return -1;
    }
    return 0;
}

/* Dispatch the messages handlers sent to ourselves; how many there were. */
static size_t drain_self(struct transport *t)
{
    size_t i;
    for (i = 0; i < t->selfq_len; i++) {
        struct ring_item it = t->selfq[i];     /* a handler may grow selfq */
        run_hooks(&t->flush, it.m.type);
        t->table[it.m.type].fn(t->table[it.m.type].ctx, &it.m, it.payload);
        free(it.payload);
    }
    t->selfq_len = 0;
    return i;
}

unsigned char *tp_sink_of(struct transport *t, const struct msg *m)
{
    const struct tp_entry *e = &t->table[m->type];
    if (!e->sink || !m->len)
        return NULL;
    run_hooks(&t->flush, m->type);
    return e->sink(e->ctx, m);
}

void tp_deliver(struct transport *t, const struct msg *m, const unsigned char *payload)
{
    run_hooks(&t->flush, m->type);      /* batched work on other types takes effect first */
    t->table[m->type].fn(t->table[m->type].ctx, m, payload);
    drain_self(t);
}

unsigned tp_drain_ring(struct transport *t)
{
    struct ring_item batch[DSM_RING_CAP];
    struct core *c = t->core;
    unsigned i, n;
    int was_full;
    core_lock(c);
    n = ring_take(&t->ring, batch, DSM_RING_CAP, &was_full);
    if (was_full)
        core_wake(c);
    core_unlock(c);
    for (i = 0; i < n; i++) {
        batch[i].m.from = (uint16_t)c->rank;
        tp_deliver(t, &batch[i].m, batch[i].payload);
        free(batch[i].payload);
    }
    return n;
}

void tp_settle(struct transport *t)
{
    do
        run_hooks(&t->flush, 0);
    while (drain_self(t));
}

void tp_finalized(struct transport *t, const struct msg *m)
{
    unsigned i;
    for (i = 0; i < t->nfinalized; i++)
        t->finalized[i](t->finalized_ctx[i], m, NULL);
}
