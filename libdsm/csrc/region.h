/* Layer 1: the region: one memfd seen through two views, and protection
 * changes that keep count of the mappings they create. */
#ifndef DSM_REGION_H
#define DSM_REGION_H
#include "ground.h"

struct region {
    struct core *c;
    pthread_mutex_t mu;         /* protection changes, from any thread, one at a time */
    uint64_t base, size;
    int memfd;
    int shared;                 /* the memfd is the host's (hostmem.c): every page read/write */
    unsigned char *app;         /* the protected application view */
    unsigned char *rw;          /* the always read/write view */
    uint64_t runs, run_budget;  /* protection runs in the app view, and the most allowed */
};

/* Map both views at r->base (never replacing a mapping), allocate the page
 * table into c->pages and c->rw, apply the initial protections (the pages a
 * rank homes start read/write), and point c->mem at region_protect.
 * On failure everything is undone. */
int region_map(struct region *r, struct core *c, uint64_t base, uint64_t size, char *err);
void region_unmap(struct region *r);
/* After finalize: no page of the application view stays accessible, so a
 * touch on any rank faults (and coh_fault refuses it), not only where the
 * page was elsewhere. */
void region_revoke(struct region *r);
#endif
