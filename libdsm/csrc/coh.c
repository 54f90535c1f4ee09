/* Layer 2: coherence, the model chosen.  coh_init reads core.release once
 * and keeps the model's coh_proto; everything after calls through it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

int coh_init(struct coh *h, struct core *c, struct transport *t, uint64_t twin_limit,
             char *err)
{
    uint64_t p;
    int rc;
    memset(h, 0, sizeof *h);
    h->c = c;
    h->t = t;
    h->proto = c->release ? &coh_release : &coh_sequential;
    h->wait_tail = &h->wait_head;
    h->ra = (struct readahead){ UINT64_MAX, UINT64_MAX, 1 };
    /* a home for every page (its entry is the model's) */
    if (!(c->homes = malloc(c->npages * sizeof *c->homes)))
        return dsm_err_sys(err, ENOMEM, "homes of %llu pages", (unsigned long long)c->npages);
    for (p = 0; p < c->npages; p++)         /* round-robin blocks to begin with */
        c->homes[p] = (uint16_t)page_home_initial(c, p);
    coh_serve_init(h);
    coh_host_init(h);
    coh_place_init(h);
    if ((rc = h->proto->init(h, twin_limit, err))) {
        coh_free(h);
        return rc;
    }
    return DSM_OK;
}

void coh_free(struct coh *h)
{
    h->proto->free(h);
    coh_host_free(h);
    free(h->c->homes);
    h->c->homes = NULL;
    coh_place_end(h);
}
