/* Layer 2: coherence, the sequential model (coh_sequential): the owner's
 * and holder's side (serving a page, invalidating a copy) and the home's
 * directory.  Its handlers run in the comm thread; coh_serve.c installs
 * the pages and takes the requests for both models.  The protocol is in
 * coherence.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

static void home_complete(struct coh *h, uint64_t page, int mode, int origin, int server);

/* ---------------------------------------------------------- owner, holder */

/* Within the hold window of a freshly received page, give it up later. */
static int held(struct coh *h, const struct msg *m)
{
    struct core *c = h->c;
    uint64_t due = c->pages[m->pg.page].installed_ns + c->hold_ns;
    if (coh_park(h, m))         /* pinned: until it is unpinned (coh_pin.c) */
        return 1;
    if (c->hold_ns && c->clock() < due) {
        h->t->ops->defer(h->t, m, due);
        return 1;
    }
    return 0;
}

/* Send pages [page, page + n) to the requester as one DSM_PAGE, their
 * data from `data` or none (a grant).  For the pages it homes, this rank
 * records the outcome at once: anything it sends the requester later
 * travels behind the pages on the same connection, so no DSM_UPDATE is
 * needed.  The requester confirms the others to their homes. */
static void send_pages(struct coh *h, uint64_t page, uint64_t n, int mode, int origin,
                       const void *data)
{
    struct core *c = h->c;
    struct msg out = { .type = DSM_PAGE, .origin = (uint16_t)origin,
                       .len = data ? (uint32_t)(n * c->page_size) : 0,
                       .pg = { .page = page, .count = (uint32_t)n, .mode = (uint8_t)mode } };
    uint64_t i;
    tp_send(h->t, origin, &out, data);
    for (i = 0; i < n; i++) {
        if (data)
            TRACE_EVENT(c, DSM_EV_SERVE, page + i, origin, mode == MODE_WRITE, c->clock(), 0);
        if (page_home(c, page + i) == c->rank && origin != c->rank)
            home_complete(h, page + i, mode, origin, c->rank);
    }
}

static int same_serve(const struct core *c, const struct batched *a, const struct batched *b)
{
    return a->origin == b->origin && a->mode == b->mode && a->data == b->data;
}

/* Downgrade our copies first, so the data cannot change after it is read
 * from the read/write view, then send the pages, a run of them per
 * message, straight from that view. */
static void flush_serves(struct coh *h)
{
    struct core *c = h->c;
    unsigned i, k, n = 0;
    for (i = 0; i < h->n_serves; i++) {     /* pinned since on_fwd? then parked */
        const struct batched *b = &h->serves[i];
        struct msg fwd = { .type = DSM_FWD, .origin = b->origin, .from = b->from,
                           .pg = { .page = b->page, .mode = b->mode,
                                   .flags = b->data ? 0 : FWD_NODATA } };
        if (!coh_claim(h, &fwd))
            h->serves[n++] = *b;
    }
    h->n_serves = n;
    if (!coh_protect_runs(h, h->serves, h->n_serves))
        for (i = 0; i < h->n_serves; i += k) {
            const struct batched *b = &h->serves[i];
            uint64_t p;
            k = coh_run_of(c, b, h->n_serves - i, same_serve);
            for (p = b->page; p < b->page + k; p++)
                c->pages[p].given_up++;
            send_pages(h, b->page, k, b->mode, b->origin,
                       b->data ? c->rw + b->page * c->page_size : NULL);
        }
    for (i = 0; i < h->n_serves; i++)
        coh_unclaim(h, h->serves[i].page);
    h->n_serves = 0;
}

/* DSM_FWD: serve the page to the requester (at the next flush), once the
 * host's other ranks lowered their mappings (coh_host.c). */
static void on_fwd(struct coh *h, const struct msg *m)
{
    if (held(h, m) ||
        coh_host_lower(h, m, m->pg.mode == MODE_WRITE ? DSM_PROT_NONE : DSM_PROT_READ))
        return;
    if (!coh_holds(h->c, m->pg.page)) {
        core_fail(h->c, "protocol error: asked to serve page %llu, which this rank does "
                  "not hold", (unsigned long long)m->pg.page);
        return;
    }
    if (h->n_serves == BATCH_MAX)
        flush_serves(h);
    h->serves[h->n_serves++] = (struct batched){     /* we keep READ, or NONE for a writer */
        .page = m->pg.page, .prot = m->pg.mode == MODE_WRITE ? DSM_PROT_NONE : DSM_PROT_READ,
        .mode = m->pg.mode, .data = !(m->pg.flags & FWD_NODATA), .origin = m->origin,
        .from = m->from };
}

/* DSM_INV: drop our read copy (the host's other ranks first: coh_host.c)
 * and acknowledge to the home. */
static void on_inv(struct coh *h, const struct msg *m)
{
    struct core *c = h->c;
    struct msg ack = { .type = DSM_INV_ACK, .origin = m->origin, .pg = { .page = m->pg.page } };
    char err[DSM_ERRLEN];
    int failed;
    if (held(h, m) || coh_host_lower(h, m, DSM_PROT_NONE) || coh_claim(h, m))
        return;
    failed = c->mem.protect(c->mem.ctx, m->pg.page, 1, DSM_PROT_NONE, err);
    coh_unclaim(h, m->pg.page);
    if (failed) {
        core_fail(c, "%s", err);
        return;
    }
    c->stats.invalidations++;
    c->pages[m->pg.page].given_up++;
    c->pages[m->pg.page].invalidated = 1;
    tp_send(h->t, m->from, &ack, NULL);
}

/* ---------------------------------------------------------- home */

/* Every other copy is gone: let the owner hand over (or grant directly). */
static void write_proceed(struct coh *h, struct dir *d, uint64_t page)
{
    struct msg m = { .type = DSM_FWD, .origin = d->origin,
                     .pg = { .page = page, .mode = MODE_WRITE } };
    int has_copy = d->origin == d->owner || (d->copyset & coh_bit(h->c, d->origin));
    if (d->origin == d->owner) {
        send_pages(h, page, 1, MODE_WRITE, d->origin, NULL);
        return;
    }
    m.pg.flags = has_copy ? FWD_NODATA : 0;
    tp_send(h->t, d->owner, &m, NULL);
}

/* Start serving a write: invalidate every other copy, then hand over. */
static void start_write(struct coh *h, struct dir *d, uint64_t page, int origin)
{
    struct msg m = { .type = DSM_INV, .origin = (uint16_t)origin, .pg = { .page = page } };
    uint64_t targets = d->copyset & ~coh_bit(h->c, origin) & ~coh_bit(h->c, d->owner), t;
    d->busy = 1;
    d->origin = (uint16_t)origin;
    d->acks = (uint16_t)__builtin_popcountll(targets);
    for (t = targets; t; t &= t - 1)
        tp_send(h->t, coh_rank_of(h->c, __builtin_ctzll(t)), &m, NULL);
    if (!d->acks)
        write_proceed(h, d, page);
}

/* A holder free to serve a read: ourselves if we hold it (no DSM_UPDATE
 * then), else the owner, else any reader; -1 if all are serving. */
static int pick_server(struct coh *h, struct dir *d)
{
    const struct core *c = h->c;
    uint64_t free = (d->copyset | coh_bit(c, d->owner)) & ~d->lending;
    if (free & coh_bit(c, c->rank))
        return c->rank;
    if (free & coh_bit(c, d->owner))
        return d->owner;
    return free ? coh_rank_of(c, __builtin_ctzll(free)) : -1;
}

/* Start a fault now if nothing stands in its way: 1 if it started. */
static int try_start(struct coh *h, uint64_t page, int origin, int mode)
{
    struct dir *d = coh_dir(h, page);
    struct msg fwd = { .type = DSM_FWD, .origin = (uint16_t)origin,
                       .pg = { .page = page, .mode = MODE_READ } };
    int server;
    if (d->busy)
        return 0;
    if (mode == MODE_WRITE) {
        if (d->reads)
            return 0;
        start_write(h, d, page, origin);
        return 1;
    }
    if ((server = pick_server(h, d)) < 0)
        return 0;
    d->reads++;
    d->lending |= coh_bit(h->c, server);
    tp_send(h->t, server, &fwd, NULL);
    return 1;
}

/* A fault on one page reaches its home: serve it now, or queue it behind
 * the ones before it (first come, first served). */
static void home_request(struct coh *h, uint64_t page, int origin, int mode)
{
    struct dir *d = coh_dir(h, page);
    struct waiter *w;
    if (!d->queued && try_start(h, page, origin, mode))
        return;
    if (!(w = malloc(sizeof *w))) {
        core_fail(h->c, "out of memory queueing a request for page %llu",
                  (unsigned long long)page);
        return;
    }
    *w = (struct waiter){ page, (uint16_t)origin, (uint8_t)mode, NULL };
    *h->wait_tail = w;
    h->wait_tail = &w->next;
    d->queued++;
}

/* DSM_REQ (coh_serve.c checked it): is a run of pages homed here? */
static int sc_serves(struct coh *h, uint64_t page, uint64_t n)
{
    const struct core *c = h->c;
    return n <= c->npages - page && page_home(c, page) == c->rank && home_run(c, page, n) == n;
}

/* DSM_REQ: each page's fault goes through its directory entry. */
static void sc_request(struct coh *h, const struct msg *m)
{
    uint64_t i, n = m->pg.count ? m->pg.count : 1;
    for (i = 0; i < n; i++)
        home_request(h, m->pg.page + i, m->origin, m->pg.mode);
}

/* Start the faults that waited for this page, oldest first, as far as
 * they can go now. */
static void home_next(struct coh *h, uint64_t page)
{
    struct dir *d = coh_dir(h, page);
    struct waiter **pp = &h->wait_head, *w;
    while (d->queued && (w = *pp)) {
        if (w->page != page) {
            pp = &w->next;
            continue;
        }
        /* out of the queue before it starts: a grant to the owner completes
         * at once (send_pages), and that looks at the queue again */
        *pp = w->next;
        if (h->wait_tail == &w->next)
            h->wait_tail = pp;
        d->queued--;
        if (!try_start(h, page, w->origin, w->mode)) {     /* back where it was */
            w->next = *pp;
            *pp = w;
            if (h->wait_tail == pp)
                h->wait_tail = &w->next;
            d->queued++;
            return;
        }
        free(w);
    }
}

/* A fault is done: record who holds the page now and start what waited. */
static void home_complete(struct coh *h, uint64_t page, int mode, int origin, int server)
{
    struct dir *d = coh_dir(h, page);
    if (mode == MODE_READ) {
        d->copyset |= coh_bit(h->c, origin);
        d->lending &= ~coh_bit(h->c, server);
        d->reads--;
    } else {
        d->owner = (uint16_t)origin;
        d->copyset = 0;
        d->busy = 0;
    }
    home_next(h, page);
}

/* DSM_UPDATE and DSM_INV_ACK come only for a fault the home is serving:
 * a read lent by `server`, or the write of `origin`. */
static int serving(struct coh *h, const struct msg *m)
{
    struct dir *d = page_home(h->c, m->pg.page) == h->c->rank ? coh_dir(h, m->pg.page) : NULL;
    int read = m->type == DSM_UPDATE && m->pg.mode == MODE_READ;
    if (d && (read ? d->reads && m->pg.server < h->c->nranks &&
                     (d->lending & coh_bit(h->c, m->pg.server))
                   : d->busy && d->origin == m->origin))
        return 1;
    core_fail(h->c, "protocol error: %s from rank %d for page %llu, which is not being "
              "served for rank %d", msg_name(m->type), m->from,
              (unsigned long long)m->pg.page, m->origin);
    return 0;
}

/* DSM_UPDATE: a run of pages `server` sent was installed. */
static void on_update(struct coh *h, const struct msg *m)
{
    struct msg one = *m;
    uint64_t n = m->pg.count ? m->pg.count : 1;
    if (n > RUN_MAX || n > h->c->npages - m->pg.page) {
        core_fail(h->c, "protocol error: DSM_UPDATE from rank %d for %llu pages at %llu",
                  m->from, (unsigned long long)n, (unsigned long long)m->pg.page);
        return;
    }
    for (one.pg.count = 1; one.pg.page < m->pg.page + n; one.pg.page++) {
        if (!serving(h, &one))
            return;
        home_complete(h, one.pg.page, m->pg.mode, m->origin, m->pg.server);
    }
}

static void on_inv_ack(struct coh *h, const struct msg *m)
{
    struct dir *d = coh_dir(h, m->pg.page);
    if (serving(h, m) && d->acks && --d->acks == 0)
        write_proceed(h, d, m->pg.page);
}

/* ---------------------------------------------------------- the model */

/* DSM_FWD, DSM_INV, DSM_UPDATE, DSM_INV_ACK. */
static void on_message(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    if (!coh_arrived(h, m))
        return;
    switch (m->type) {
    case DSM_FWD: on_fwd(h, m); break;
    case DSM_UPDATE: on_update(h, m); break;
    case DSM_INV: on_inv(h, m); break;
    case DSM_INV_ACK: on_inv_ack(h, m); break;
    }
}

static void sc_flush(struct coh *h, int type)
{
    if (type != DSM_FWD)
        flush_serves(h);
}

/* A directory entry for every page: any page can move here. */
static int sc_init(struct coh *h, uint64_t twin_limit, char *err)
{
    static const int types[] = { DSM_FWD, DSM_UPDATE, DSM_INV, DSM_INV_ACK };
    struct core *c = h->c;
    uint64_t p;
    unsigned i;
    if (!(h->dirs = calloc(c->npages, sizeof *h->dirs)))
        return dsm_err_sys(err, ENOMEM, "directory for %llu pages",
                           (unsigned long long)c->npages);
    for (p = 0; p < c->npages; p++)
        if (c->homes[p] == c->rank)
            h->dirs[p].owner = (uint16_t)c->rank;
    for (i = 0; i < sizeof types / sizeof *types; i++)
        tp_register(h->t, types[i], on_message, h, 0);
    return DSM_OK;
}

static void sc_free(struct coh *h)
{
    while (h->wait_head) {
        struct waiter *w = h->wait_head;
        h->wait_head = w->next;
        free(w);
    }
    free(h->dirs);
    h->dirs = NULL;
}

/* A write fault asks for a writable copy; the directory invalidates the
 * others first, so no access opens without a message. */
static int sc_asks_write(int write)
{
    return write;
}

static enum coh_step sc_open_here(struct coh *h, uint64_t page, int write)
{
    return COH_ASK;
}

/* A host's copy opens for writing only through the home. */
static int sc_open_host(struct coh *h, uint64_t page, int access, int write)
{
    return 0;
}

static void sc_host_installed(struct coh *h, uint64_t page)
{
}

/* A page from anyone but its home (or from ourselves) is confirmed to the
 * home, which then records the new holder. */
static int sc_confirms(const struct core *c, uint64_t page, int from)
{
    return page_home(c, page) != from || from == c->rank;
}

const struct coh_proto coh_sequential = {
    .name = "sequential",
    .init = sc_init,
    .free = sc_free,
    .asks_write = sc_asks_write,
    .open_here = sc_open_here,
    .open_host = sc_open_host,
    .host_installed = sc_host_installed,
    .confirms = sc_confirms,
    .serves = sc_serves,
    .request = sc_request,
    .flush = sc_flush,
};
