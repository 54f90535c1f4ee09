/* Layer 2: coherence, pinned pages.  A pinned page stays resident: the
 * serving side parks a DSM_FWD or DSM_INV for it (as the hold window
 * defers them) until it is unpinned, and the unpinning thread then posts
 * DSM_UNPIN to its own comm thread, which hands what was parked back to
 * the transport to run again.
 *
 * Pins are taken by ops.c's OP_FETCH, in ascending page order, each as soon as
 * its page is here; a rank waiting for a page another holds pinned holds
 * pins only on lower pages, so two ranks pinning each other's pages cannot
 * wait for each other in a circle.  Nested pins (pinned() inside pinned())
 * break the order, and the deadline turns such a deadlock into an error. */
#define _GNU_SOURCE
#include <stdlib.h>
#include "coherence.h"

/* DSM_UNPIN: run again what was parked for pages no longer pinned, through
 * the transport's deferred queue, as the hold window does. */
static void on_unpin(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    struct core *c = h->c;
    struct parked **pp, *p, *ready = NULL, **tail = &ready;
    if (m->from != c->rank) {
        core_fail(c, "protocol error: DSM_UNPIN from rank %d", m->from);
        return;
    }
    core_lock(c);
    for (pp = &h->parked; (p = *pp); ) {
        if (c->pages[p->m.pg.page].pinned) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        p->next = NULL;
        *tail = p;
        tail = &p->next;
    }
    core_unlock(c);
    while ((p = ready)) {
        ready = p->next;
        h->t->ops->defer(h->t, &p->m, c->clock());
        free(p);
    }
}

void coh_pin_init(struct coh *h)
{
    h->parked = NULL;
    tp_register(h->t, DSM_UNPIN, on_unpin, h, 0);
}

void coh_pin_free(struct coh *h)
{
    while (h->parked) {
        struct parked *p = h->parked;
        h->parked = p->next;
        free(p);
    }
}

/* Park m for its pinned page (caller holds core.mu). */
static void park(struct coh *h, const struct msg *m)
{
    struct core *c = h->c;
    struct parked *p, **pp;
    if (!(p = malloc(sizeof *p))) {
        core_fail(c, "out of memory parking %s for pinned page %llu",
                         msg_name(m->type), (unsigned long long)m->pg.page);
        return;
    }
    p->m = *m;
    p->next = NULL;
    for (pp = &h->parked; *pp; pp = &(*pp)->next)     /* FIFO */
        ;
    *pp = p;
    c->stats.deferred++;
    TRACE(c, "%s page %llu parked: pinned", msg_name(m->type), (unsigned long long)m->pg.page);
}

/* Park m if its page is pinned (1); else, with `claim`, mark the page
 * leaving.  The decision and the claim under one lock: a thread that pins
 * takes core.mu too, so it either pinned first (we park) or sees the claim.
 * A claimed page stops being closed (coherence.h): the serve or the
 * invalidation sets its protection now. */
static int park_or_claim(struct coh *h, const struct msg *m, int claim)
{
    struct core *c = h->c;
    int pinned;
    core_lock(c);
    if ((pinned = c->pages[m->pg.page].pinned != 0))
        park(h, m);
    else if (claim) {
        c->pages[m->pg.page].leaving = 1;
        coh_forget_closed(c, m->pg.page);
    }
    core_unlock(c);
    return pinned;
}

int coh_park(struct coh *h, const struct msg *m)
{
    return park_or_claim(h, m, 0);
}

int coh_claim(struct coh *h, const struct msg *m)
{
    return park_or_claim(h, m, 1);
}

void coh_unclaim(struct coh *h, uint64_t page)
{
    int wake;
    core_lock(h->c);
    h->c->pages[page].leaving = 0;
    /* a thread waits for the serve to end: to pin the page, or in a fault */
    wake = h->claim_waits || h->c->pages[page].waiters;
    core_unlock(h->c);
    if (wake)
        core_wake(h->c);
}

int coh_pin_page(struct coh *h, uint64_t page, int write)
{
    struct page *pg = &h->c->pages[page];
    if (!coh_satisfied(h->c, page, write) || pg->pinned == UINT32_MAX || pg->leaving)
        return 0;
    pg->pinned++;
    return 1;
}

int coh_unpin(struct coh *h, uint64_t first, uint64_t n)
{
    struct core *c = h->c;
    uint64_t p;
    int freed = 0;
    for (p = first; p < first + n; p++)
        if (c->pages[p].pinned && !--c->pages[p].pinned)
            freed = 1;
    return freed && h->parked;
}

int coh_unpin_poke(struct coh *h)
{
    struct msg m = { .type = DSM_UNPIN, .origin = (uint16_t)h->c->rank };
    return tp_send_app(h->t, h->c->rank, &m, NULL) == TP_FULL ? TP_FULL : 0;
}
