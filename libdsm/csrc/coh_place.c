/* Layer 2: coherence, moving page homes (sequential mode).  A placement
 * gives pages [first, first + n) new homes at a collective point: each new
 * home first takes its pages for writing through the old homes, then every
 * rank tells every other that it is done (DSM_PLACE, sent by the comm
 * thread behind everything it sent before), and once a rank has heard all
 * of them, nothing for those pages is in flight towards it: it switches
 * its table.  The steps and their order are in coherence.h.
 *
 * With share=host on several hosts the homes are host leaders (dsm_place
 * refuses another rank), so only leaders take pages: through the protocol
 * between leaders, the old host's ranks lowered by DSM_HINV before the page
 * leaves it (coh_host.c), the new host's word raised as the page comes in,
 * as for any fault.  The host's other ranks take no page, but they take
 * part in the DSM_PLACE exchange and switch their tables with everyone:
 * page_home must agree on every rank (dsm_page_home, checkpoints), and a
 * page word never changed reads by its home (hostmem.h).  That word needs
 * no switch: each moved page's word is set on both its old home's host
 * (lowered as it was served away) and its new one (raised as it came),
 * and any other host's reads "no access" under either table. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

/* Every DSM_PLACE is here: switch the homes of the range.  An old home's
 * entry must be at rest, naming the new home as the only holder; a new
 * home's entry starts afresh.  Comm thread. */
static void place_switch(struct coh *h)
{
    struct core *c = h->c;
    struct place *pl = &h->place;
    uint64_t p;
    core_lock(c);
    for (p = pl->first; p < pl->first + pl->n && !core_failed(c); p++) {
        int from = c->homes[p], to = pl->homes[p - pl->first];
        struct dir *d = coh_dir(h, p);
        if (from == to)
            continue;
        if (from == c->rank && (d->busy || d->reads || d->queued || d->lending ||
                                d->owner != to || d->copyset))
            core_fail(c, "page %llu was in use while its home moved from rank %d to "
                             "%d: no thread may touch the pages of a placement",
                             (unsigned long long)p, from, to);
        if (to == c->rank)
            *d = (struct dir){ .owner = (uint16_t)to };
        c->homes[p] = (uint16_t)to;
        c->stats.homes_moved++;
    }
    pl->done = 1;
    core_unlock(c);
    core_wake(c);
}

/* DSM_PLACE: ours (this rank's part is done: tell every peer, behind what
 * we sent them before) or a peer's.  With every rank's, switch. */
static void on_place(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    struct core *c = h->c;
    struct msg out = { .type = DSM_PLACE, .origin = (uint16_t)c->rank };
    int r;
    if (m->from == c->rank)
        for (r = 0; r < c->nranks; r++)
            if (r != c->rank)
                tp_send(h->t, r, &out, NULL);
    if (++h->place.fences < (unsigned)c->nranks)
        return;
    h->place.fences = 0;
    place_switch(h);
}

void coh_place_init(struct coh *h)
{
    memset(&h->place, 0, sizeof h->place);
    tp_register(h->t, DSM_PLACE, on_place, h, 0);
}

int coh_place_settled(struct coh *h, uint64_t first, uint64_t n)
{
    uint64_t p;
    for (p = first; p < first + n; p++)
        if (h->c->pages[p].pending)
            return 0;
    return 1;
}

int coh_place_begin(struct coh *h, uint64_t first, uint64_t n, const uint16_t *homes)
{
    struct place *pl = &h->place;
    free(pl->homes);
    if (!(pl->homes = malloc((n ? n : 1) * sizeof *pl->homes)))
        return -1;
    memcpy(pl->homes, homes, n * sizeof *pl->homes);
    pl->first = first;
    pl->n = n;
    pl->done = 0;
    return 0;
}

uint64_t coh_place_next(struct coh *h, uint64_t page)
{
    const struct place *pl = &h->place;
    for (; page < pl->first + pl->n; page++)
        if (pl->homes[page - pl->first] == h->c->rank && !coh_satisfied(h->c, page, 1))
            break;
    return page;
}

int coh_place_post(struct coh *h)
{
    struct msg m = { .type = DSM_PLACE, .origin = (uint16_t)h->c->rank };
    return tp_send_app(h->t, h->c->rank, &m, NULL) == TP_FULL ? TP_FULL : 0;
}

int coh_place_done(struct coh *h)
{
    return h->place.done;
}

void coh_place_end(struct coh *h)
{
    free(h->place.homes);
    h->place.homes = NULL;
}
