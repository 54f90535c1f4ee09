/* Layer 1: the transport interface.  A backend moves messages between
 * ranks: comm.c over sockets with a comm thread, or the simulator
 * (tests/sim) through in-process queues.  Both deliver through this
 * common part, which holds
 *   - the handler table: one handler per message type, registered by the
 *     protocols at init (the transport knows no protocol by name);
 *   - flush hooks: batched work a protocol finishes before a message of
 *     another type, and at the end of each round of events;
 *   - finalized handlers: a rank said DSM_FINALIZE (ourselves included);
 *   - the ring from application threads, and the queue of messages a
 *     handler sends to its own rank (dispatched right after that handler).
 *
 * Threads: tp_send and the handlers run in whichever thread plays the comm
 * thread, holding comm.c's loop_mu: the comm thread, or with DSM_WAIT=reply
 * an application thread waiting for a reply (app_poll, which can be inside
 * the SIGSEGV handler: safe because the fault is synchronous and no holder
 * of core.mu touches the application view).  Every handler may run in any
 * of these, one at a time; none may assume the comm thread.  In the
 * simulator the scheduler runs them.  tp_send_app runs in application
 * threads.  See ground.h for the locks each may hold. */
#ifndef DSM_TRANSPORT_H
#define DSM_TRANSPORT_H
#include <stddef.h>
#include "ground.h"
#include "proto.h"
#include "ring.h"

#define TP_FULL RING_FULL       /* tp_send_app/tp_post: the ring is full, wait and retry */
#define TP_DROPPED 2            /* tp_send_app: sent; core.mu was dropped meanwhile */
#define TP_HOOKS 4

struct transport;
typedef void (*tp_handler)(void *ctx, const struct msg *m, const unsigned char *payload);
typedef void (*tp_hook)(void *ctx, int arg);
/* Where the payload of m should be received, or NULL for anywhere. */
typedef unsigned char *(*tp_sink_fn)(void *ctx, const struct msg *m);

struct transport_ops {
    /* To a peer, from the comm thread: queued, payload (m->len bytes) copied. */
    void (*send)(struct transport *t, int dst, const struct msg *m, const void *payload);
    /* To a peer, from an application thread not holding core.mu. */
    void (*send_app)(struct transport *t, int dst, const struct msg *m, const void *payload);
    /* The ring has something new: wake the comm thread. */
    void (*wake)(struct transport *t);
    /* Deliver m again at `due` (core clock): the hold window. */
    void (*defer)(struct transport *t, const struct msg *m, uint64_t due);
};

struct tp_entry {
    tp_handler fn;
    void *ctx;
    uint32_t max_len;           /* payload bytes a message of this type may carry */
    tp_sink_fn sink;            /* optional: where its payload goes (tp_sink) */
};

struct tp_hooks {
    tp_hook fn[TP_HOOKS];
    void *ctx[TP_HOOKS];
    unsigned n;
};

struct transport {
    const struct transport_ops *ops;
    void *backend;
    struct core *core;
    struct tp_entry table[DSM_MSG_MAX];
    struct tp_hooks flush;
    tp_handler finalized[TP_HOOKS];
    void *finalized_ctx[TP_HOOKS];
    unsigned nfinalized;
    struct ring ring;           /* guarded by core.mu */
    struct ring_item *selfq;    /* comm thread only */
    size_t selfq_len, selfq_cap;
};

void tp_init(struct transport *t, struct core *c, const struct transport_ops *ops,
             void *backend);
void tp_free(struct transport *t);
void tp_register(struct transport *t, int type, tp_handler fn, void *ctx, uint32_t max_len);
/* Messages of `type` (registered already) may have their payload received
 * straight where fn(ctx, m) says; the handler then gets that pointer. */
void tp_sink(struct transport *t, int type, tp_sink_fn fn);
void tp_on_flush(struct transport *t, tp_hook fn, void *ctx);        /* fn(ctx, type) */
/* fn(ctx, the DSM_FINALIZE message) */
void tp_on_finalized(struct transport *t, tp_handler fn, void *ctx);

/* From the comm thread, to any rank (the payload, m->len bytes, is copied). */
void tp_send(struct transport *t, int dst, struct msg *m, const void *payload);
/* From an application thread holding core.mu, to any rank: 0 (posted to
 * ourselves), TP_DROPPED (sent to a peer, core.mu dropped meanwhile), or
 * TP_FULL (nothing sent). */
int tp_send_app(struct transport *t, int dst, struct msg *m, const void *payload);

/* Backends: a received header is sane (known type, payload size, origin)?
 * 0, or -1 with the failure recorded. */
int tp_check(struct transport *t, const struct msg *m);
/* Backends: where to receive a checked message's payload, or NULL (into a
 * buffer of the backend's).  Batched work that must come before m takes
 * effect first; the backend then delivers m with that pointer, before any
 * other message from the same peer. */
unsigned char *tp_sink_of(struct transport *t, const struct msg *m);
/* Backends: run one message and what it sent to ourselves. */
void tp_deliver(struct transport *t, const struct msg *m, const unsigned char *payload);
/* Backends: the messages application threads posted; how many. */
unsigned tp_drain_ring(struct transport *t);
/* Backends: end of a round of events: batched work takes effect. */
void tp_settle(struct transport *t);
/* Backends: a rank said DSM_FINALIZE (m->from; ourselves included). */
void tp_finalized(struct transport *t, const struct msg *m);
#endif
