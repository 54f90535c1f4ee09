/* Layer 2: coherence, the serving side: the handlers the comm thread runs
 * as requester (install), owner (serve), copy holder (invalidate) and home
 * (directory).  They are registered in the transport's table at coh_init. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

static void home_complete(struct coh *h, uint64_t page, int mode, int origin, int server);

/* Apply the protections of a batch, one protect() per run of consecutive
 * pages with the same protection; pages kept closed are left alone.
 * Nonzero (the failure recorded) if one could not be applied. */
static int protect_runs(struct coh *h, const struct batched *b, unsigned n)
{
    struct core *c = h->c;
    char err[DSM_ERRLEN];
    unsigned i, j;
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && b[j].page == b[j - 1].page + 1 && b[j].prot == b[i].prot &&
             !b[j].closed; j++)
            ;
        if (b[i].closed)
            j = i + 1;
        else if (c->mem.protect(c->mem.ctx, b[i].page, j - i, b[i].prot, err)) {
            core_fail(c, "%s", err);
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------- requester */

/* How many pages of the batch from b[0] on are one run: consecutive pages
 * alike in `same` (which compares two entries), at most RUN_MAX of them. */
static unsigned run_of(const struct core *c, const struct batched *b, unsigned n,
                       int (*same)(const struct core *, const struct batched *,
                                   const struct batched *))
{
    unsigned k = 1, limit = n < RUN_MAX ? n : RUN_MAX;
    while (k < limit && b[k].page == b[k - 1].page + 1 && same(c, b, b + k))
        k++;
    return k;
}

/* Installs confirmed by one DSM_UPDATE: to one home, for one server. */
static int same_confirm(const struct core *c, const struct batched *a, const struct batched *b)
{
    return a->confirm == b->confirm && a->server == b->server && a->prot == b->prot &&
           page_home(c, a->page) == page_home(c, b->page);
}

/* Open the received pages, wake the faulting threads, confirm to the homes
 * (one DSM_UPDATE per run).  A read-ahead trigger stays closed, and so
 * does a page a thread waits for in a fault if this rank had it mapped
 * before (open, or given up since): opening that one flushes the TLB of
 * every CPU running the process, the waiter's among them, so the waiter
 * opens it itself (coh_open_closed).  A page never mapped here needs no
 * flush and opens at once. */
static void flush_installs(struct coh *h)
{
    struct core *c = h->c;
    uint64_t now = c->clock();
    unsigned i, k;
    if (!h->n_installs)
        return;
    core_lock(c);
    for (i = 0; i < h->n_installs; i++) {
        struct batched *b = &h->installs[i];
        struct page *pg = &c->pages[b->page];
        b->closed = pg->trigger || (pg->waiters && (pg->prot != DSM_PROT_NONE || pg->given_up));
        __atomic_store_n(&pg->closed, b->closed ? b->prot : 0, __ATOMIC_RELEASE);
        if (b->closed) {
            pg->installed_ns = now;
            pg->pending = 0;
        }
    }
    core_unlock(c);
    if (protect_runs(h, h->installs, h->n_installs)) {
        h->n_installs = 0;
        return;
    }
    core_lock(c);
    for (i = 0; i < h->n_installs; i++)
        if (!h->installs[i].closed) {   /* a closed one is its waiter's since the first pass */
            c->pages[h->installs[i].page].installed_ns = now;
            c->pages[h->installs[i].page].pending = 0;
        }
    core_unlock(c);
    core_wake(c);               /* after the unlock: the woken thread wants core.mu */
    for (i = 0; i < h->n_installs; i += k) {
        const struct batched *b = &h->installs[i];
        struct msg up = { .type = DSM_UPDATE, .origin = (uint16_t)c->rank,
                          .pg = { .page = b->page, .server = b->server,
                                  .mode = b->prot == DSM_PROT_RW ? MODE_WRITE : MODE_READ } };
        k = run_of(c, b, h->n_installs - i, same_confirm);
        up.pg.count = k;
        if (b->confirm)
            tp_send(h->t, page_home(c, b->page), &up, NULL);
    }
    h->n_installs = 0;
}

/* Is a DSM_PAGE's run of pages in the region, with all of its data or
 * none?  The pages it names (count 0 means one). */
static uint64_t page_run(const struct core *c, const struct msg *m)
{
    uint64_t n = m->pg.count ? m->pg.count : 1;
    if (n > RUN_MAX || n > c->npages - m->pg.page || (m->len && m->len != n * c->page_size))
        return 0;
    return n;
}

/* Where a DSM_PAGE's data goes: straight into its pages in the read/write
 * view (the backend receives it there), or NULL for a malformed run,
 * which on_page then fails.  The flush hooks have run: no batched serve
 * still reads these pages. */
static unsigned char *page_sink(void *ctx, const struct msg *m)
{
    struct coh *h = ctx;
    if (m->pg.page >= h->c->npages || !page_run(h->c, m))
        return NULL;
    return h->c->rw + m->pg.page * h->c->page_size;
}

/* DSM_PAGE: the data (if any) goes in through the read/write view (unless
 * the backend received it there already); the pages open at the next
 * flush, before any other message is handled.  A page that did not come
 * from its home is confirmed to the home with DSM_UPDATE (sequential mode;
 * a run may span homes). */
static void on_page(struct coh *h, const struct msg *m, const unsigned char *payload)
{
    struct core *c = h->c;
    unsigned char *dst = c->rw + m->pg.page * c->page_size;
    uint64_t i, n = page_run(c, m);
    if (!n) {
        core_fail(c, "protocol error: DSM_PAGE from rank %d with %u bytes for %u pages at %llu",
                  m->from, m->len, m->pg.count, (unsigned long long)m->pg.page);
        return;
    }
    if (payload && payload != dst)
        memcpy(dst, payload, m->len);
    for (i = 0; i < n; i++) {
        if (h->n_installs == BATCH_MAX)
            flush_installs(h);
        h->installs[h->n_installs++] = (struct batched){
            .page = m->pg.page + i,
            .prot = m->pg.mode == MODE_WRITE ? DSM_PROT_RW : DSM_PROT_READ,
            .confirm = !h->c->release && (page_home(c, m->pg.page + i) != m->from ||
                                       m->from == c->rank),
            .server = m->from };
    }
}

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
    if (!protect_runs(h, h->serves, h->n_serves))
        for (i = 0; i < h->n_serves; i += k) {
            const struct batched *b = &h->serves[i];
            uint64_t p;
            k = run_of(c, b, h->n_serves - i, same_serve);
            for (p = b->page; p < b->page + k; p++)
                c->pages[p].given_up++;
            send_pages(h, b->page, k, b->mode, b->origin,
                       b->data ? c->rw + b->page * c->page_size : NULL);
        }
    for (i = 0; i < h->n_serves; i++)
        coh_unclaim(h, h->serves[i].page);
    h->n_serves = 0;
}

/* DSM_FWD: serve the page to the requester (at the next flush). */
static void on_fwd(struct coh *h, const struct msg *m)
{
    if (held(h, m))
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

/* DSM_INV: drop our read copy and acknowledge to the home. */
static void on_inv(struct coh *h, const struct msg *m)
{
    struct core *c = h->c;
    struct msg ack = { .type = DSM_INV_ACK, .origin = m->origin, .pg = { .page = m->pg.page } };
    char err[DSM_ERRLEN];
    int failed;
    if (held(h, m) || coh_claim(h, m))
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
    int has_copy = d->origin == d->owner || (d->copyset >> d->origin & 1);
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
    uint64_t targets = d->copyset & ~(1ULL << origin) & ~(1ULL << d->owner);
    int r;
    d->busy = 1;
    d->origin = (uint16_t)origin;
    d->acks = (uint16_t)__builtin_popcountll(targets);
    for (r = 0; r < h->c->nranks; r++)
        if (targets >> r & 1)
            tp_send(h->t, r, &m, NULL);
    if (!d->acks)
        write_proceed(h, d, page);
}

/* A holder free to serve a read: ourselves if we hold it (no DSM_UPDATE
 * then), else the owner, else any reader; -1 if all are serving. */
static int pick_server(struct coh *h, struct dir *d)
{
    uint64_t free = (d->copyset | 1ULL << d->owner) & ~d->lending;
    if (free >> h->c->rank & 1)
        return h->c->rank;
    if (free >> d->owner & 1)
        return d->owner;
    return free ? __builtin_ctzll(free) : -1;
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
    d->lending |= 1ULL << server;
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

/* DSM_REQ: `count` pages from `page` on, all homed here. */
static void on_req(struct coh *h, const struct msg *m)
{
    const struct core *c = h->c;
    uint64_t i, n = m->pg.count ? m->pg.count : 1;
    int ours = h->c->release ? rc_serves(h, m->pg.page, n)
                          : n <= c->npages - m->pg.page && page_home(c, m->pg.page) == c->rank &&
                            home_run(c, m->pg.page, n) == n;
    if (!ours || (m->pg.mode != MODE_READ && m->pg.mode != MODE_WRITE)) {
        core_fail(h->c, "protocol error: DSM_REQ from rank %d for %llu pages at %llu, not "
                  "all homed here", m->from, (unsigned long long)n,
                  (unsigned long long)m->pg.page);
        return;
    }
    if (h->c->release)
        rc_serve(h, m);
    else
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
        d->copyset |= 1ULL << origin;
        d->lending &= ~(1ULL << server);
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
    if (d && (read ? d->reads && m->pg.server < h->c->nranks && (d->lending >> m->pg.server & 1)
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

/* ---------------------------------------------------------- the table */

/* Every coherence message names a page of the region. */
static void on_message(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    if (m->pg.page >= h->c->npages) {
        core_fail(h->c, "protocol error: %s from rank %d names page %llu of %llu",
                  msg_name(m->type), m->from, (unsigned long long)m->pg.page,
                  (unsigned long long)h->c->npages);
        return;
    }
    TRACE(h->c, "%s page %llu mode %d origin %d from %d", msg_name(m->type),
          (unsigned long long)m->pg.page, m->pg.mode, m->origin, m->from);
    switch (m->type) {
    case DSM_REQ: on_req(h, m); break;
    case DSM_FWD: on_fwd(h, m); break;
    case DSM_PAGE: on_page(h, m, payload); break;
    case DSM_UPDATE: on_update(h, m); break;
    case DSM_INV: on_inv(h, m); break;
    case DSM_INV_ACK: on_inv_ack(h, m); break;
    }
}

/* Batched work takes effect, except that on messages of `type` (which may
 * keep batching): every other message must see it done. */
static void on_flush(void *ctx, int type)
{
    struct coh *h = ctx;
    if (type != DSM_PAGE)
        flush_installs(h);
    if (type != DSM_FWD)
        flush_serves(h);
}

int coh_init(struct coh *h, struct core *c, struct transport *t, uint64_t twin_limit,
             char *err)
{
    uint64_t p;
    int type, rc, release = c->release;
    memset(h, 0, sizeof *h);
    h->c = c;
    h->t = t;
    h->wait_tail = &h->wait_head;
    h->ra = (struct readahead){ UINT64_MAX, UINT64_MAX, 1 };
    /* a home for every page, and in sequential mode a directory entry for
     * every page: any page can move here (release mode keeps none) */
    if ((!release && !(h->dirs = calloc(c->npages, sizeof *h->dirs))) ||
        !(c->homes = malloc(c->npages * sizeof *c->homes))) {
        coh_free(h);
        return dsm_err_sys(err, ENOMEM, "directory for %llu pages",
                           (unsigned long long)c->npages);
    }
    for (p = 0; p < c->npages; p++) {       /* round-robin blocks to begin with */
        c->homes[p] = (uint16_t)((p / c->block) % (uint64_t)c->nranks);
        if (c->homes[p] == c->rank && !release)
            h->dirs[p].owner = (uint16_t)c->rank;
    }
    /* release mode needs no directory traffic: only requests and pages */
    for (type = DSM_REQ; type <= DSM_INV_ACK; type++)
        if (!release || type == DSM_REQ || type == DSM_PAGE)
            tp_register(t, type, on_message, h,
                        type == DSM_PAGE ? (uint32_t)(RUN_MAX * c->page_size) : 0);
    tp_sink(t, DSM_PAGE, page_sink);
    tp_on_flush(t, on_flush, h);
    coh_place_init(h);
    if (release && (rc = rc_init(h, twin_limit, err))) {
        coh_free(h);
        return rc;
    }
    return DSM_OK;
}

void coh_free(struct coh *h)
{
    while (h->wait_head) {
        struct waiter *w = h->wait_head;
        h->wait_head = w->next;
        free(w);
    }
    free(h->dirs);
    h->dirs = NULL;
    free(h->c->homes);
    h->c->homes = NULL;
    coh_place_end(h);
    if (h->c->release)
        rc_free(h);
}
