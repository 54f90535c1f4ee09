/* Layer 2: coherence, the receiving side both models share: the comm
 * thread installs the pages that come (DSM_PAGE) and takes the requests
 * (DSM_REQ) that the model (coh_init's coh_proto) then serves. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

/* ---------------------------------------------------------- batches */

int coh_protect_runs(struct coh *h, const struct batched *b, unsigned n)
{
    struct core *c = h->c;
    char err[DSM_ERRLEN];
    unsigned i, j;
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && b[j].page == b[j - 1].page + 1 && b[j].prot == b[i].prot &&
             !b[j].closed && !b[j].stale; j++)
            ;
        if (b[i].closed || b[i].stale)
            j = i + 1;
        else if (c->mem.protect(c->mem.ctx, b[i].page, j - i, b[i].prot, err)) {
            core_fail(c, "%s", err);
            return 1;
        }
    }
    return 0;
}

unsigned coh_run_of(const struct core *c, const struct batched *b, unsigned n,
                    int (*same)(const struct core *, const struct batched *,
                                const struct batched *))
{
    unsigned k = 1, limit = n < RUN_MAX ? n : RUN_MAX;
    while (k < limit && b[k].page == b[k - 1].page + 1 && same(c, b, b + k))
        k++;
    return k;
}

/* ---------------------------------------------------------- installs */

/* Installs confirmed by one DSM_UPDATE: to one home, for one server. */
static int same_confirm(const struct core *c, const struct batched *a, const struct batched *b)
{
    return a->confirm == b->confirm && a->server == b->server && a->prot == b->prot &&
           page_home(c, a->page) == page_home(c, b->page);
}

/* Open the received pages, wake the faulting threads, confirm to the homes
 * (one DSM_UPDATE per run; a stale page is only confirmed).  A read-ahead
 * trigger stays closed, and so does a page a thread waits for in a fault
 * if this rank had it mapped before (open, or given up since): opening
 * that one flushes the TLB of every CPU running the process, the waiter's
 * among them, so the waiter opens it itself (coh_open_closed).  A page
 * never mapped here needs no flush and opens at once. */
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
        if (b->stale)
            continue;
        b->closed = pg->trigger || (pg->waiters && (pg->prot != DSM_PROT_NONE || pg->given_up));
        __atomic_store_n(&pg->closed, b->closed ? b->prot : 0, __ATOMIC_RELEASE);
        if (b->closed) {
            pg->installed_ns = now;
            pg->pending = 0;
        }
    }
    core_unlock(c);
    if (coh_protect_runs(h, h->installs, h->n_installs)) {
        h->n_installs = 0;
        return;
    }
    core_lock(c);
    for (i = 0; i < h->n_installs; i++)     /* a closed one is its waiter's since the first pass */
        if (!h->installs[i].closed && !h->installs[i].stale) {
            c->pages[h->installs[i].page].installed_ns = now;
            c->pages[h->installs[i].page].pending = 0;
        }
    if (c->host_state)          /* a leader: its host holds them now */
        coh_host_installed(h, h->installs, h->n_installs);
    core_unlock(c);
    core_wake(c);               /* after the unlock: the woken thread wants core.mu */
    for (i = 0; i < h->n_installs; i += k) {
        const struct batched *b = &h->installs[i];
        struct msg up = { .type = DSM_UPDATE, .origin = (uint16_t)c->rank,
                          .pg = { .page = b->page, .server = b->server,
                                  .mode = b->prot == DSM_PROT_RW ? MODE_WRITE : MODE_READ } };
        k = coh_run_of(c, b, h->n_installs - i, same_confirm);
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

/* May a page that came be installed?  Only while our one request for it
 * is out (pending, cleared when it opens): a page that comes otherwise (a
 * duplicate, or an answer to a request that was already answered) would
 * overwrite what this rank wrote since it came, so it is stale and dropped.
 * Marks in stale[] the pages of a run not wanted; the count of them.
 * Read without core.mu, which a faulting thread spinning for this very
 * page takes and drops in a loop: while an answer is on its way, only the
 * thread playing the comm thread (this one) clears pending, and no thread
 * sets it. */
static uint64_t stale_pages(struct coh *h, uint64_t page, uint64_t n, uint8_t *stale)
{
    const struct page *pages = h->c->pages;
    uint64_t i, count = 0;
    for (i = 0; i < n; i++)
        count += stale[i] = !__atomic_load_n(&pages[page + i].pending, __ATOMIC_ACQUIRE);
    return count;
}

/* Where a DSM_PAGE's data goes: straight into its pages in the read/write
 * view (the backend receives it there) if every page of the run is
 * wanted; else NULL, for a malformed run (which on_page then fails) or
 * one with a stale page (received whole, for on_page to pick from).  The
 * flush hooks have run: no batched serve still reads these pages. */
static unsigned char *page_sink(void *ctx, const struct msg *m)
{
    struct coh *h = ctx;
    uint8_t stale[RUN_MAX];
    uint64_t n;
    if (m->pg.page >= h->c->npages || !(n = page_run(h->c, m)) ||
        stale_pages(h, m->pg.page, n, stale))
        return NULL;
    return h->c->rw + m->pg.page * h->c->page_size;
}

/* DSM_PAGE: the data (if any) of each wanted page goes in through the
 * read/write view (unless the backend received it there already); the
 * pages open at the next flush, before any other message is handled.  A
 * stale page is dropped, and counted; it is still confirmed, if the model
 * confirms, so that a home's entry never waits for it.  The model says
 * whether an install is confirmed to the home with DSM_UPDATE (a run may
 * span homes). */
static void on_page(struct coh *h, const struct msg *m, const unsigned char *payload)
{
    struct core *c = h->c;
    unsigned char *dst = c->rw + m->pg.page * c->page_size;
    uint8_t stale[RUN_MAX];
    uint64_t i, p, n = page_run(c, m);
    if (!n) {
        core_fail(c, "protocol error: DSM_PAGE from rank %d with %u bytes for %u pages at %llu",
                  m->from, m->len, m->pg.count, (unsigned long long)m->pg.page);
        return;
    }
    h->stale += stale_pages(h, m->pg.page, n, stale);
    for (i = 0; i < n; i++) {
        p = m->pg.page + i;
        if (stale[i])
            TRACE(c, "page %llu from rank %d came unasked: dropped", (unsigned long long)p,
                  m->from);
        else if (payload && payload != dst)
            memcpy(dst + i * c->page_size, payload + i * c->page_size, c->page_size);
        if (h->n_installs == BATCH_MAX)
            flush_installs(h);
        h->installs[h->n_installs++] = (struct batched){
            .page = p, .stale = stale[i],
            .prot = m->pg.mode == MODE_WRITE ? DSM_PROT_RW : DSM_PROT_READ,
            .confirm = (uint8_t)h->proto->confirms(c, p, m->from),
            .server = m->from };
    }
}

/* ---------------------------------------------------------- the table */

/* DSM_REQ: `count` pages from `page` on, all served here (the model says
 * which), for reading or writing. */
static void on_req(struct coh *h, const struct msg *m)
{
    uint64_t n = m->pg.count ? m->pg.count : 1;
    if (!h->proto->serves(h, m->pg.page, n) ||
        (m->pg.mode != MODE_READ && m->pg.mode != MODE_WRITE)) {
        core_fail(h->c, "protocol error: DSM_REQ from rank %d for %llu pages at %llu, not "
                  "all homed here", m->from, (unsigned long long)n,
                  (unsigned long long)m->pg.page);
        return;
    }
    h->proto->request(h, m);
}

static void on_message(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    if (!coh_arrived(h, m))
        return;
    if (m->type == DSM_REQ)
        on_req(h, m);
    else
        on_page(h, m, payload);
}

/* Batched work takes effect, except that on messages of `type` (which may
 * keep batching): every other message must see it done. */
static void on_flush(void *ctx, int type)
{
    struct coh *h = ctx;
    if (type != DSM_PAGE)
        flush_installs(h);
    h->proto->flush(h, type);
}

void coh_serve_init(struct coh *h)
{
    tp_register(h->t, DSM_REQ, on_message, h, 0);
    tp_register(h->t, DSM_PAGE, on_message, h, (uint32_t)(RUN_MAX * h->c->page_size));
    tp_sink(h->t, DSM_PAGE, page_sink);
    tp_on_flush(h->t, on_flush, h);
}
