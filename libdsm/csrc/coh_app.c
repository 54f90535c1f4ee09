/* Layer 2: coherence, the faulting side.  Application threads (inside the
 * SIGSEGV handler, or in dsm_prefetch) ask the home for pages and wait for
 * them to be installed, by the comm thread (or, with DSM_WAIT=reply, by
 * whichever waiting thread polls the sockets).  A remote home gets the DSM_REQ straight
 * from the faulting thread; our own home logic runs in the comm thread, so
 * a request to ourselves goes through the ring. */
#define _GNU_SOURCE
#include "coherence.h"

/* Ask the home for pages [page, page + n), all in one home block, and mark
 * them pending (caller holds core.mu).  0, TP_DROPPED (core.mu was dropped:
 * look at the state again) or TP_FULL (nothing asked, nothing marked, no
 * trigger left).  A page that allows the access already is never asked
 * for: its answer would be installed over what is written here meanwhile
 * (a page being served away, too, is waited for, not asked for). */
static int send_run(struct coh *h, uint64_t page, uint64_t n, int write)
{
    struct core *c = h->c;
    uint8_t mode = write ? MODE_WRITE : MODE_READ;
    struct msg m = { .type = DSM_REQ, .origin = (uint16_t)c->rank,
                     .pg = { .page = page, .count = (uint32_t)n, .mode = mode } };
    uint64_t i;
    int rc;
    for (i = 0; i < n; i++)
        if (coh_satisfied(c, page + i, write)) {
            core_fail(c, "protocol error: asking for page %llu, which allows the %s here",
                      (unsigned long long)(page + i), write ? "write" : "read");
            return TP_FULL;
        }
    for (i = 0; i < n; i++)
        c->pages[page + i].pending = mode;
    if ((rc = tp_send_app(h->t, page_home(c, page), &m, NULL)) == TP_FULL)
        for (i = 0; i < n; i++)
            c->pages[page + i].pending = c->pages[page + i].trigger = 0;
    return rc;
}

/* Must a page be asked for, for this access (caller holds core.mu)?  Not
 * if it allows it, is on its way, is being served away (the serve sets its
 * protection without core.mu: asked now, its answer could come over a copy
 * that allows the access), or (for a read) is here, kept closed. */
static int needs_request(const struct core *c, uint64_t page, int write)
{
    return !c->pages[page].pending && !c->pages[page].leaving &&
           !coh_satisfied(c, page, write) && (write || !coh_holds(c, page));
}

/* Request up to `want` pages from `page` on: the run stops at the first
 * page that needs no request.  A `speculative` run
 * (read-ahead) also stops at a page whose read copy a writer has taken
 * from us before: such a page is written elsewhere, and fetching it unasked
 * would only make its writer invalidate it again.  With `trigger`, its
 * middle page becomes a trigger: it stays closed when it comes, and the
 * first access to it asks for the next run while the rest of this one is
 * read (early read-ahead).  The run goes out as one DSM_REQ per home.
 * Caller holds core.mu; returns the TP_DROPPED and TP_FULL bits of the
 * sends.  *got receives the length of the run. */
static int request_run(struct coh *h, uint64_t page, uint64_t want, int write,
                       int speculative, int trigger, uint64_t *got)
{
    struct core *c = h->c;
    uint64_t n = 1, cut;
    int rc = 0;
    while (n < want && page + n < c->npages && needs_request(c, page + n, write) &&
           !(speculative && c->pages[page + n].invalidated))
        n++;
    *got = n;
    c->stats.pages_prefetched += n - 1;
    if (trigger && n >= 2)
        c->pages[page + n / 2].trigger = 1;
    while (n) {
        cut = home_run(c, page, n);
        rc |= send_run(h, page, cut, write);
        page += cut;
        n -= cut;
        /* The send dropped core.mu: another thread may have asked for the
         * rest, or it came.  Asking twice would install a page twice, the
         * second time over what was written since the first. */
        for (cut = 0; rc & TP_DROPPED && cut < n && needs_request(c, page + cut, write); cut++)
            ;
        n = rc & TP_DROPPED ? cut : n;
    }
    return rc;
}

int coh_request(struct coh *h, uint64_t page, uint64_t n, int write)
{
    uint64_t got;
    if (coh_host_local(h->c))   /* through the host's leader */
        return coh_host_request(h, page, write);
    return request_run(h, page, n, write, 0, 0, &got);
}

/* Release mode: ask again for a copy an acquire dropped, before anyone
 * faults on it; the home has every write the acquire orders before it.
 * Caller holds core.mu, which this may drop. */
void coh_refetch(struct coh *h, uint64_t page)
{
    uint64_t got;
    if (!h->c->pages[page].pending && h->c->pages[page].prot == DSM_PROT_NONE)
        request_run(h, page, 1, 0, 0, 0, &got);
}

/* Back the pages a run of n from `start` will want next (going down or
 * up), core.mu dropped meanwhile.  Returns TP_DROPPED. */
static int populate_ahead(struct core *c, uint64_t start, uint64_t n, int down)
{
    uint64_t ahead = down ? (start > 2 * n ? start - 2 * n : 0) : start + n;
    uint64_t len = ahead + 2 * n <= c->npages ? 2 * n : c->npages - ahead;
    core_unlock(c);
    c->mem.populate(c->mem.ctx, ahead, len);
    core_lock(c);
    return TP_DROPPED;
}

/* A fault's request.  Reads that keep running into the page just past the
 * last run, upwards or downwards (memmove copies large buffers backwards),
 * fetch twice as many pages each time, up to the read-ahead limit; an
 * upward run also gets a trigger.  Returns request_run's bits. */
static int request(struct coh *h, uint64_t page, int write)
{
    struct core *c = h->c;
    struct readahead *ra = &h->ra;
    uint64_t start = page, n;
    int down = page == ra->down_next, rc;
    *(write ? &c->stats.write_faults : &c->stats.read_faults) += 1;
    if (write)
        return request_run(h, page, 1, 1, 0, 0, &n);
    ra->window = page == ra->up_next || down ? ra->window * 2 : 1;
    if (ra->window > c->readahead)
        ra->window = c->readahead;
    while (down && page - start + 1 < ra->window && start > 0 &&
           needs_request(c, start - 1, 0) && !c->pages[start - 1].invalidated)
        start--;
    rc = request_run(h, start, down ? page - start + 1 : ra->window, 0, 1, !down, &n);
    ra->up_next = start + n;
    ra->down_next = start ? start - 1 : UINT64_MAX;
    if (n > 1)
        rc |= populate_ahead(c, start, n, down);
    return rc;
}

/* A trigger page was opened: ask for the run after the one it is in, twice
 * as long, unless it is here or on its way already.  Caller holds core.mu,
 * which this may drop. */
static void readahead_early(struct coh *h, uint64_t trigger)
{
    struct core *c = h->c;
    uint64_t start = trigger + 1, n;
    while (start < c->npages && start - trigger <= c->readahead && !needs_request(c, start, 0))
        start++;
    if (start >= c->npages || start - trigger > c->readahead || c->pages[start].invalidated)
        return;
    n = 4 * (start - trigger) < c->readahead ? 4 * (start - trigger) : c->readahead;
    c->stats.readahead_early++;
    if (request_run(h, start, n, 0, 1, 1, &n) & TP_FULL)
        return;
    h->ra.window = n;
    h->ra.up_next = start + n;
    if (n > 1)
        populate_ahead(c, start, n, 0);
}

int coh_open_closed(struct coh *h, uint64_t page)
{
    struct core *c = h->c;
    struct page *pg = &c->pages[page];
    char err[DSM_ERRLEN];
    int trigger = pg->trigger;
    if (!pg->closed || pg->pending)
        return 0;
    if (c->mem.protect(c->mem.ctx, page, 1, pg->closed, err))
        core_fail(c, "%s", err);
    pg->trigger = 0;
    __atomic_store_n(&pg->closed, 0, __ATOMIC_RELEASE);
    c->stats.opened_by_waiter += !trigger;
    return 1 + trigger;
}

int coh_fault_ready(struct coh *h, uint64_t page, int write)
{
    const struct page *pg = &h->c->pages[page];
    return coh_satisfied(h->c, page, write) || (!pg->pending && !pg->leaving);
}

enum coh_step coh_fault_step(struct coh *h, uint64_t page, int write)
{
    struct core *c = h->c;
    int rc;
    if (coh_satisfied(c, page, write))
        return COH_DONE;
    if (coh_host_local(c))
        return coh_host_fault(h, page, write);
    if ((rc = coh_open_closed(h, page))) {
        if (rc == 2 && !write)  /* a write ends the read stream (and may be a placement's) */
            readahead_early(h, page);
        return COH_AGAIN;
    }
    if ((rc = h->proto->open_here(h, page, write)) != COH_ASK)
        return (enum coh_step)rc;       /* opened with no message (release: a twin) */
    if (c->pages[page].pending || c->pages[page].leaving)
        return COH_WAIT;        /* coh_unclaim wakes us once a page served away is gone */
    rc = request(h, page, h->proto->asks_write(write));
    if (coh_satisfied(c, page, write))
        return COH_AGAIN;
    if (c->pages[page].pending)
        return COH_WAIT;
    if (rc & TP_FULL)
        return COH_FULL;
    return COH_AGAIN;           /* it came and went while core.mu was dropped */
}
