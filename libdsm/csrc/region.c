/* The region: one memfd seen through two views, the page table, and
 * protection changes that keep count of the mappings they create.
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
#include "internal.h"

#define RUN_RESERVE 2048    /* mappings left to the rest of the process */

static const int mprot[] = {
    [DSM_PROT_NONE] = PROT_NONE,
    [DSM_PROT_READ] = PROT_READ,
    [DSM_PROT_RW] = PROT_READ | PROT_WRITE,
};

/* Read one unsigned number from a /proc file; 0 if unreadable. */
static uint64_t read_proc_number(const char *path)
{
    unsigned long long v = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* Number of mappings the process has now. */
static uint64_t count_maps(void)
{
    uint64_t n = 0;
    int c;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 0;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static int initial_prot(uint64_t page)
{
    return page_home(page) == st.rank ? DSM_PROT_RW : DSM_PROT_NONE;
}

/* Runs of equal protection the initial layout needs. */
static uint64_t initial_runs(void)
{
    uint64_t runs = 1, p;
    if (st.nranks == 1)
        return 1;
    for (p = st.block; p < st.npages; p += st.block)
        runs += initial_prot(p) != initial_prot(p - st.block);
    return runs;
}

/* Apply the initial protections, one mprotect per owned block. */
static int apply_initial(char *err)
{
    uint64_t p, n;
    for (p = 0; p < st.npages; p++)
        st.pages[p].prot = (uint8_t)initial_prot(p);
    for (p = 0; p < st.npages; p += st.block) {
        if (initial_prot(p) != DSM_PROT_RW)
            continue;
        n = st.block < st.npages - p ? st.block : st.npages - p;
        if (mprotect(st.app + p * st.page_size, n * st.page_size, PROT_READ | PROT_WRITE)) {
            dsm_err(err, "mprotect of the initial pages: %s", strerror(errno));
            return DSM_ESYS;
        }
    }
    return DSM_OK;
}

/* Create the memfd, map both views and set the initial protections.
 * The application view never replaces an existing mapping. */
int region_map(char *err)
{
    void *want = (void *)(uintptr_t)st.base, *got;
    uint64_t max_maps = read_proc_number("/proc/sys/vm/max_map_count");
    uint64_t in_use = count_maps();

    st.runs = initial_runs();
    st.run_budget = max_maps > in_use + RUN_RESERVE ? max_maps - in_use - RUN_RESERVE : 0;
    if (st.runs > st.run_budget) {
        dsm_err(err, "the initial layout needs %llu mappings but vm.max_map_count (%llu) "
                "leaves room for %llu: set DSM_BLOCK_PAGES larger than %llu",
                (unsigned long long)st.runs, (unsigned long long)max_maps,
                (unsigned long long)st.run_budget, (unsigned long long)st.block);
        return DSM_ELIMIT;
    }
    st.pages = calloc(st.npages, sizeof *st.pages);
    if (!st.pages) {
        dsm_err(err, "page table for %llu pages: out of memory", (unsigned long long)st.npages);
        return DSM_ESYS;
    }
    st.memfd = memfd_create("libdsm", MFD_CLOEXEC);
    if (st.memfd < 0 || ftruncate(st.memfd, (off_t)st.size)) {
        dsm_err(err, "memfd of %llu bytes: %s", (unsigned long long)st.size, strerror(errno));
        return DSM_ESYS;
    }
    got = mmap(want, st.size, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, st.memfd, 0);
    if (got == MAP_FAILED || got != want) {
        int e = got == MAP_FAILED ? errno : EEXIST;
        if (got != MAP_FAILED)
            munmap(got, st.size);
        dsm_err(err, "cannot map %llu bytes at 0x%llx: %s; choose another DSM_BASE",
                (unsigned long long)st.size, (unsigned long long)st.base,
                e == EEXIST ? "the address range is already in use" : strerror(e));
        return e == EEXIST ? DSM_EADDR : DSM_ESYS;
    }
    st.app = got;
    st.rw = mmap(NULL, st.size, PROT_READ | PROT_WRITE, MAP_SHARED, st.memfd, 0);
    if (st.rw == MAP_FAILED) {
        dsm_err(err, "read/write view of %llu bytes: %s", (unsigned long long)st.size,
                strerror(errno));
        return DSM_ESYS;
    }
    return apply_initial(err);
}

/* Protection boundaries among pages first - 1 .. first + n. */
static uint64_t edges(uint64_t first, uint64_t n)
{
    uint64_t i, e = 0, end = first + n < st.npages ? first + n : st.npages - 1;
    for (i = first ? first : 1; i <= end; i++)
        e += st.pages[i - 1].prot != st.pages[i].prot;
    return e;
}

/* The same if pages first .. first + n - 1 all had prot p. */
static uint64_t edges_if(uint64_t first, uint64_t n, int p)
{
    uint64_t e = 0;
    if (first > 0)
        e += st.pages[first - 1].prot != p;
    if (first + n < st.npages)
        e += st.pages[first + n].prot != p;
    return e;
}

/* Give pages [first, first + n) one protection (comm thread only), with one
 * mprotect.  Refuses, with a clear failure, a change that would need more
 * mappings than the budget: an mprotect ENOMEM inside the protocol would be
 * unrecoverable. */
int region_set_prot(uint64_t first, uint64_t n, int prot)
{
    uint64_t runs, i;
    if (n == 1 && st.pages[first].prot == prot)
        return DSM_OK;
    runs = st.runs - edges(first, n) + edges_if(first, n, prot);
    if (runs > st.run_budget) {
        comm_fail("page %llu: the region would need %llu mappings, over the %llu that "
                  "vm.max_map_count allows; use a larger DSM_BLOCK_PAGES or raise "
                  "vm.max_map_count", (unsigned long long)first,
                  (unsigned long long)runs, (unsigned long long)st.run_budget);
        return DSM_ELIMIT;
    }
    if (mprotect(st.app + first * st.page_size, n * st.page_size, mprot[prot])) {
        comm_fail("pages %llu..%llu: mprotect: %s", (unsigned long long)first,
                  (unsigned long long)(first + n - 1), strerror(errno));
        return DSM_ESYS;
    }
    st.runs = runs;
    pthread_mutex_lock(&st.mu);
    for (i = first; i < first + n; i++)
        st.pages[i].prot = (uint8_t)prot;
    pthread_mutex_unlock(&st.mu);
    return DSM_OK;
}
