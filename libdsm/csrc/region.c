/* Layer 1: the region: one memfd seen through two views, the page table,
 * and protection changes that keep count of the mappings they create.
 *
 * The application view sits at the fixed address and carries per-page
 * protections; the read/write view is where the comm thread copies page data
 * in and out, so no application thread ever sees half a page. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "hostmem.h"
#include "region.h"

#define RUN_RESERVE 2048    /* mappings left to the rest of the process */

static const int mprot[] = {
    [DSM_PROT_NONE] = PROT_NONE,
    [DSM_PROT_READ] = PROT_READ,
    [DSM_PROT_RW] = PROT_READ | PROT_WRITE,
};

/* Read one unsigned number from a /proc file: 0, or -1 with errno set. */
static int read_proc_number(const char *path, uint64_t *out)
{
    unsigned long long v;
    FILE *f = fopen(path, "r");
    int ok;
    if (!f)
        return -1;
    ok = fscanf(f, "%llu", &v) == 1;
    fclose(f);
    if (!ok) {
        errno = EINVAL;
        return -1;
    }
    *out = v;
    return 0;
}

/* Number of mappings the process has now: 0, or -1 with errno set. */
static int count_maps(uint64_t *out)
{
    uint64_t n = 0;
    int c;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    *out = n;
    return 0;
}


/* Runs of equal protection the initial layout needs. */
static uint64_t initial_runs(const struct core *c)
{
    uint64_t runs = 1, p;
    if (c->nranks == 1)
        return 1;
    for (p = c->block; p < c->npages; p += c->block)
        runs += page_initial_prot(c, p) != page_initial_prot(c, p - c->block);
    return runs;
}

/* Apply the initial protections, one mprotect per homed block; with the
 * host's shared memfd on one host, every page read/write (one physical
 * copy: nothing to fault for); on several, the blocks the host homes. */
static int apply_initial(struct region *r, char *err)
{
    struct core *c = r->c;
    uint64_t p, n;
    if (r->shared && !c->host_state) {
        for (p = 0; p < c->npages; p++)
            c->pages[p].prot = DSM_PROT_RW;
        if (mprotect(r->app, r->size, PROT_READ | PROT_WRITE))
            return dsm_err_sys(err, errno, "mprotect of the host-shared region");
        return DSM_OK;
    }
    for (p = 0; p < c->npages; p++)
        c->pages[p].prot = (uint8_t)page_initial_prot(c, p);
    for (p = 0; p < c->npages; p += c->block) {
        if (page_initial_prot(c, p) == DSM_PROT_NONE)
            continue;
        n = c->block < c->npages - p ? c->block : c->npages - p;
        if (mprotect(r->app + p * c->page_size, n * c->page_size, PROT_READ | PROT_WRITE))
            return dsm_err_sys(err, errno, "mprotect of the initial pages");
    }
    return DSM_OK;
}

static int protect(void *ctx, uint64_t first, uint64_t n, int prot, char *err);
static void populate(void *ctx, uint64_t first, uint64_t n);

/* Create the memfd, map both views and set the initial protections.
 * The application view never replaces an existing mapping. */
int region_map(struct region *r, struct core *c, uint64_t base, uint64_t size, char *err)
{
    void *want = (void *)(uintptr_t)base, *got;
    uint64_t max_maps, in_use;
    int rc = DSM_ESYS;

    *r = (struct region){ .c = c, .base = base, .size = size, .memfd = -1 };
    pthread_mutex_init(&r->mu, NULL);
    if (read_proc_number("/proc/sys/vm/max_map_count", &max_maps))
        return dsm_err_sys(err, errno, "reading /proc/sys/vm/max_map_count");
    if (count_maps(&in_use))
        return dsm_err_sys(err, errno, "reading /proc/self/maps");
    if ((rc = hostmem_claim(c, size, &r->memfd, err)))
        return rc;
    r->shared = r->memfd >= 0;
    r->runs = r->shared && !c->host_state ? 1 : initial_runs(c);
    r->run_budget = max_maps > in_use + RUN_RESERVE ? max_maps - in_use - RUN_RESERVE : 0;
    if (r->runs > r->run_budget) {
        dsm_err(err, "the initial layout needs %llu mappings but vm.max_map_count (%llu) "
                "leaves room for %llu: set DSM_BLOCK_PAGES larger than %llu",
                (unsigned long long)r->runs, (unsigned long long)max_maps,
                (unsigned long long)r->run_budget, (unsigned long long)c->block);
        rc = DSM_ELIMIT;
        goto err;
    }
    if (!(c->pages = calloc(c->npages, sizeof *c->pages))) {
        rc = dsm_err_sys(err, ENOMEM, "page table for %llu pages",
                         (unsigned long long)c->npages);
        goto err;
    }
    if (!r->shared)
        r->memfd = memfd_create("libdsm", MFD_CLOEXEC);
    if (r->memfd < 0 || (!r->shared && ftruncate(r->memfd, (off_t)size))) {
        rc = dsm_err_sys(err, errno, "memfd of %llu bytes", (unsigned long long)size);
        goto err;
    }
    got = mmap(want, size, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, r->memfd, 0);
    if (got == MAP_FAILED || got != want) {
        int e = got == MAP_FAILED ? errno : EEXIST;
        if (got != MAP_FAILED)
            munmap(got, size);
        if (e == EEXIST) {
            dsm_err(err, "cannot map %llu bytes at 0x%llx: the address range is already in "
                    "use; choose another DSM_BASE", (unsigned long long)size,
                    (unsigned long long)base);
            rc = DSM_EADDR;
        } else {
            rc = dsm_err_sys(err, e, "cannot map %llu bytes at 0x%llx (choose another "
                             "DSM_BASE)", (unsigned long long)size, (unsigned long long)base);
        }
        goto err;
    }
    r->app = got;
    r->rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
    if (r->rw == MAP_FAILED) {
        r->rw = NULL;
        rc = dsm_err_sys(err, errno, "read/write view of %llu bytes", (unsigned long long)size);
        goto err;
    }
    if ((rc = apply_initial(r, err)))
        goto err;
    c->rw = r->rw;
    c->mem = (struct mem_ops){ protect, populate, r };
    c->stats.vma_runs = r->runs;
    c->stats.vma_budget = r->run_budget;
    return DSM_OK;
err:
    region_unmap(r);
    return rc;
}

void region_revoke(struct region *r)
{
    if (r->app)
        mprotect(r->app, r->size, PROT_NONE);
}

void region_unmap(struct region *r)
{
    if (r->app)
        munmap(r->app, r->size);
    if (r->rw)
        munmap(r->rw, r->size);
    if (r->memfd >= 0)
        close(r->memfd);
    if (r->shared)
        hostmem_release();
    free(r->c->pages);
    r->c->pages = NULL;
    r->c->rw = NULL;
    r->app = r->rw = NULL;
    r->memfd = -1;
}

/* Protection boundaries among pages first - 1 .. first + n. */
static uint64_t edges(const struct core *c, uint64_t first, uint64_t n)
{
    uint64_t i, e = 0, end = first + n < c->npages ? first + n : c->npages - 1;
    for (i = first ? first : 1; i <= end; i++)
        e += c->pages[i - 1].prot != c->pages[i].prot;
    return e;
}

/* The same if pages first .. first + n - 1 all had prot p. */
static uint64_t edges_if(const struct core *c, uint64_t first, uint64_t n, int p)
{
    uint64_t e = 0;
    if (first > 0)
        e += c->pages[first - 1].prot != p;
    if (first + n < c->npages)
        e += c->pages[first + n].prot != p;
    return e;
}

/* The MappingLimitError text of a protection change that needs `runs`
 * mappings where only `budget` are to be had.  Returns DSM_ELIMIT. */
static int over_budget(char *err, uint64_t first, uint64_t runs, uint64_t budget)
{
    dsm_err(err, "page %llu: the region would need %llu mappings, over the %llu that "
            "vm.max_map_count allows; use a larger DSM_BLOCK_PAGES or raise "
            "vm.max_map_count", (unsigned long long)first, (unsigned long long)runs,
            (unsigned long long)budget);
    return DSM_ELIMIT;
}

/* Give pages [first, first + n) one protection, with one mprotect.
 * Refuses, with a clear error, a change that would need more mappings than
 * the budget: an mprotect ENOMEM inside the protocol would be
 * unrecoverable.  The budget is what was left at init; should the program
 * have taken mappings of its own since, mprotect's ENOMEM tells, and it
 * becomes the same error, the budget shrinking to what the region has
 * (this runs in the SIGSEGV handler too: no counting /proc/self/maps). */
static int protect(void *ctx, uint64_t first, uint64_t n, int prot, char *err)
{
    struct region *r = ctx;
    struct core *c = r->c;
    uint64_t runs;
    int rc = DSM_OK;
    if (n == 1 && c->pages[first].prot == prot)
        return DSM_OK;
    mu_lock(&r->mu, LK_REGION);
    runs = r->runs - edges(c, first, n) + edges_if(c, first, n, prot);
    if (runs > r->run_budget) {
        rc = over_budget(err, first, runs, r->run_budget);
    } else if (mprotect(r->app + first * c->page_size, n * c->page_size, mprot[prot])) {
        if (errno == ENOMEM && runs > r->runs) {
            r->run_budget = c->stats.vma_budget = r->runs;
            rc = over_budget(err, first, runs, r->run_budget);
        } else {
            rc = dsm_err_sys(err, errno, "pages %llu..%llu: mprotect",
                             (unsigned long long)first, (unsigned long long)(first + n - 1));
        }
    } else {
        r->runs = runs;
        c->stats.vma_runs = runs;
        core_record_prot(c, first, n, prot);
    }
    mu_unlock(&r->mu, LK_REGION);
    return rc;
}

/* Back pages about to arrive with memory now, in the waiting thread, so
 * the comm thread does not take a page fault (and zero a page) for each
 * page it copies in. */
static void populate(void *ctx, uint64_t first, uint64_t n)
{
    struct region *r = ctx;
    madvise(r->rw + first * r->c->page_size, n * r->c->page_size, MADV_POPULATE_WRITE);
}
