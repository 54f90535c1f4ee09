/* The simulator's transport backend and memory: per-pair FIFO channels in
 * one process, no sockets and no threads.  The protocol code above it is
 * the real one (libdsm/csrc). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"

uint64_t sim_now;

static uint64_t sim_clock(void)
{
    return sim_now;
}

void sim_violation(struct sim *s, const char *fmt, ...)
{
    va_list ap;
    if (s->violation[0])
        return;
    va_start(ap, fmt);
    vsnprintf(s->violation, sizeof s->violation, fmt, ap);
    va_end(ap);
}

static void enqueue(struct sim *s, int src, int dst, const struct msg *m, const void *payload,
                    int eof)
{
    struct chan *c = &s->ch[src][dst];
    struct sim_msg *sm = calloc(1, sizeof *sm);
    sm->m = *m;
    sm->eof = eof;
    sm->id = s->next_id++;
    if (m->len) {
        sm->payload = malloc(m->len);
        memcpy(sm->payload, payload, m->len);
    }
    if (c->tail)
        c->tail->next = sm;
    else
        c->head = sm;
    c->tail = sm;
    c->len++;
}

static void op_send(struct transport *t, int dst, const struct msg *m, const void *payload)
{
    struct srank *r = t->backend;
    r->core.stats.msgs_sent++;
    if (r->peer_eof[dst])       /* as comm.c: sending to a closed connection fails */
        core_fail(&r->core, "cannot send %s to rank %d: its connection is closed",
                  msg_name(m->type), dst);
    else if (r->sim->r[dst].dead && below(2))   /* as peer.c: the reset reaches a send first */
        core_fail_peer(&r->core, dst, "send %s to rank %d: Connection reset by peer",
                       msg_name(m->type), dst);
    else if (!r->sim->r[dst].dead)
        enqueue(r->sim, r->id, dst, m, payload, 0);
    sim_yield(r->id);           /* a sender without core.mu lets the rank's others run */
}

static void op_wake(struct transport *t)
{
    (void)t;                    /* the scheduler sees the ring */
}

static void op_defer(struct transport *t, const struct msg *m, uint64_t due)
{
    struct srank *r = t->backend;
    struct sim_deferred *d = calloc(1, sizeof *d), **pp = &r->deferred;
    d->due = due;
    d->m = *m;
    while (*pp && (*pp)->due <= due)
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    r->core.stats.deferred++;
}

static const struct transport_ops sim_ops = { op_send, op_send, op_wake, op_defer };

/* As comm.c: DSM_FINALIZE from ourselves goes to every peer. */
static void on_finalize(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct srank *r = ctx;
    int p;
    (void)payload;
    if (m->from == r->id) {
        for (p = 0; p < r->sim->n; p++) {
            struct msg f = *m;
            if (p != r->id)
                tp_send(&r->tp, p, &f, NULL);
        }
        r->self_finalized = 1;
    } else {
        r->peer_finalized[m->from] = 1;
    }
    tp_finalized(&r->tp, m);
    for (p = 0; p < r->sim->n && (p == r->id || r->peer_finalized[p]); p++)
        ;
    if (r->self_finalized && p == r->sim->n) {     /* as comm.c, once all said it */
        r->core.phase = PHASE_FINISHED;
        core_wake(&r->core);
    }
}

static int protect(void *ctx, uint64_t first, uint64_t n, int prot, char *err)
{
    (void)err;
    struct srank *r = ctx;
    sim_yield(r->id);           /* as an mprotect: the caller may have dropped core.mu */
    step_log("rank %d protects pages %llu..%llu: %d", r->id, (unsigned long long)first,
             (unsigned long long)(first + n - 1), prot);
    core_record_prot(&r->core, first, n, prot);
    return DSM_OK;
}

static void populate(void *ctx, uint64_t first, uint64_t n)
{
    struct srank *r = ctx;
    (void)first, (void)n;
    sim_yield(r->id);
}

void simnet_hosts(struct sim *s, int nhosts, const int *size, uint64_t npages)
{
    int r, h = 0;
    s->nhosts = nhosts;
    memset(s->nlocal, 0, sizeof s->nlocal);
    for (r = 0; r < s->n; r++) {        /* as machine-file hosts of these sizes */
        if (s->nlocal[h] == size[h])
            h++;
        s->host[r] = h;
        if (!s->nlocal[h]) {
            s->leaders[h] = (uint16_t)r;
            s->host_of[r] = (uint16_t)h;
            s->host_rw[h] = calloc(npages, SIM_PAGE);
            s->host_state[h] = calloc(npages, sizeof(uint64_t));
        }
        s->locals[h][s->nlocal[h]++] = (uint16_t)r;
    }
}

/* As api.c's take_hosts and hostmem.c's claim: the rank's host. */
static void join_host(struct sim *s, struct core *c, int id)
{
    int h = s->host[id];
    c->nleaders = s->nhosts;
    c->leaders = s->leaders;
    c->host_of = s->host_of;
    c->leader = s->leaders[h];
    c->nlocal = s->nlocal[h];
    c->locals = s->locals[h];
    for (c->local_index = 0; s->locals[h][c->local_index] != id; c->local_index++)
        ;
    c->host_state = s->host_state[h];
    c->rw = s->host_rw[h];
}

int simnet_rank_init(struct sim *s, int id, uint64_t npages, uint64_t block, uint64_t readahead,
                     uint64_t hold_ns, uint32_t nlocks, int release)
{
    struct srank *r = &s->r[id];
    struct core *c = &r->core;
    char err[DSM_ERRLEN];
    uint64_t p;
    memset(r, 0, sizeof *r);
    r->id = id;
    r->sim = s;
    core_init(c);
    c->rank = id;
    c->nranks = s->n;
    c->release = release;
    c->page_size = SIM_PAGE;
    c->npages = npages;
    c->block = block;
    c->readahead = readahead;
    c->hold_ns = hold_ns;
    c->clock = sim_clock;
    if (s->nhosts)
        join_host(s, c, id);
    else
        c->rw = calloc(npages, SIM_PAGE);
    c->pages = calloc(npages, sizeof *c->pages);
    c->mem = (struct mem_ops){ protect, populate, r };
    for (p = 0; p < npages; p++)        /* as region.c */
        c->pages[p].prot = (uint8_t)page_initial_prot(c, p);
    tp_init(&r->tp, c, &sim_ops, r);
    tp_register(&r->tp, DSM_FINALIZE, on_finalize, r, 0);
    /* as dsm_start; twins for two pages at most: release mode often sends
     * pages home early */
    if (ops_init(&r->ops, c, &r->tp, &r->coh, &r->coll, &r->locks, 2 * SIM_PAGE, nlocks, err)) {
        fprintf(stderr, "sim: rank %d: %s\n", id, err);
        return -1;
    }
    c->phase = PHASE_RUNNING;
    return 0;
}

void simnet_rank_free(struct srank *r)
{
    while (r->deferred) {
        struct sim_deferred *d = r->deferred;
        r->deferred = d->next;
        free(d);
    }
    ops_free(&r->ops);
    tp_free(&r->tp);
    if (!r->sim->nhosts || r->core.leader == r->id) {   /* a host's memory goes with its leader */
        free(r->core.rw);
        free(r->core.host_state);
    }
    free(r->core.pages);
}

static void count_delivery(struct sim *s, uint64_t id)
{
    if (id >= s->delivered_cap) {
        uint64_t cap = s->delivered_cap ? s->delivered_cap * 2 : 1024;
        while (cap <= id)
            cap *= 2;
        s->delivered = realloc(s->delivered, cap);
        memset(s->delivered + s->delivered_cap, 0, cap - s->delivered_cap);
        s->delivered_cap = cap;
    }
    if (s->delivered[id]++)
        sim_violation(s, "message %llu delivered twice", (unsigned long long)id);
}

/* As comm.c receives a payload straight into its pages: the header is
 * checked and its sink asked when it arrives, then half the payload lands,
 * and the other half (with the delivery) only at a later step, other
 * steps running in between.  1 while the message is not complete. */
static int receive_part(struct sim *s, struct srank *r, int src, struct sim_msg *sm,
                        void (*observe)(struct sim *, int, const struct msg *))
{
    uint32_t half = sm->m.len / 2;
    if (sm->sink) {
        memcpy(sm->sink + sm->got, sm->payload + sm->got, sm->m.len - sm->got);
        return 0;
    }
    sm->m.from = (uint16_t)src;
    if (!sm->m.len || tp_check(&r->tp, &sm->m) || !(sm->sink = tp_sink_of(&r->tp, &sm->m)))
        return 0;
    observe(s, r->id, &sm->m);
    memcpy(sm->sink, sm->payload, half);
    sm->got = half;
    s->split_receipts++;
    return 1;
}

void simnet_deliver(struct sim *s, int src, int dst, int burst, int settle,
                    void (*observe)(struct sim *, int, const struct msg *))
{
    struct chan *c = &s->ch[src][dst];
    struct srank *r = &s->r[dst];
    while (burst-- > 0 && c->head) {
        struct sim_msg *sm = c->head;
        if (!sm->eof && receive_part(s, r, src, sm, observe))
            break;              /* as comm.c: the rest of its payload comes later */
        c->head = sm->next;
        if (!c->head)
            c->tail = NULL;
        c->len--;
        count_delivery(s, sm->id);
        if (sm->eof) {          /* as comm.c's on_readable at end of stream */
            r->peer_eof[src] = 1;
            if (!r->peer_finalized[src] || !r->self_finalized)
                core_fail(&r->core, "rank %d closed its connection before finalize (end of "
                          "stream)", src);
        } else {
            sm->m.from = (uint16_t)src;
            r->core.stats.msgs_recv++;
            if (sm->sink) {
                tp_deliver(&r->tp, &sm->m, sm->sink);
            } else if (!tp_check(&r->tp, &sm->m)) {
                observe(s, dst, &sm->m);
                tp_deliver(&r->tp, &sm->m, sm->payload);
            }
        }
        free(sm->payload);
        free(sm);
    }
    if (settle)                 /* else batched work waits: application steps may come first */
        tp_settle(&r->tp);
}

/* The comm thread's end of a round: batched work takes effect. */
void simnet_settle(struct srank *r)
{
    tp_settle(&r->tp);
}

void simnet_drain_ring(struct srank *r)
{
    tp_drain_ring(&r->tp);
    tp_settle(&r->tp);
}

int simnet_fire_deferred(struct srank *r)
{
    struct sim_deferred *d = r->deferred;
    if (!d || d->due > sim_now)
        return 0;
    r->deferred = d->next;
    tp_deliver(&r->tp, &d->m, NULL);
    free(d);
    tp_settle(&r->tp);
    return 1;
}

/* The rank dies: what it sent stays in flight, then its peers read end of
 * stream; what was sent to it is gone. */
void simnet_kill(struct sim *s, int id)
{
    struct msg none = { 0 };
    int p;
    s->r[id].dead = 1;
    for (p = 0; p < s->n; p++) {
        struct chan *c = &s->ch[p][id];
        while (c->head) {
            struct sim_msg *sm = c->head;
            c->head = sm->next;
            count_delivery(s, sm->id);  /* accounted for: dropped with the rank */
            free(sm->payload);
            free(sm);
        }
        c->tail = NULL;
        c->len = 0;
        if (p != id && !s->r[p].dead)
            enqueue(s, id, p, &none, NULL, 1);
    }
}
