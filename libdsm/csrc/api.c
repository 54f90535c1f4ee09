/* Layer 4: the entry points cffi sees (dsm_api.h).  One rank's core is the
 * `struct dsm` below, the only instance of the layers' state in a real
 * process: configuration is checked here and the pieces are started in
 * order (region, transport, protocols, handler, comm thread) and undone in
 * reverse. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "coherence.h"
#include "comm.h"
#include "fault.h"
#include "region.h"
#include "sync.h"

#ifndef DSM_BUILD_VERSION
#define DSM_BUILD_VERSION "unknown"
#endif

static struct dsm {
    struct core core;
    struct region region;
    struct transport tp;
    struct coh coh;
    struct sync sync;
} D;

void dsm_core_version(int *major, int *minor)
{
    *major = DSM_CORE_MAJOR;
    *minor = DSM_CORE_MINOR;
}

const char *dsm_build_version(void)
{
    return DSM_BUILD_VERSION;
}

uint64_t dsm_page_size(void)
{
    return (uint64_t)sysconf(_SC_PAGESIZE);
}

static int check_config(const struct dsm_config *c, const int *peer_fds, char *err)
{
    uint64_t ps = dsm_page_size();
    int r;
    if (c->nranks < 1 || c->nranks > DSM_MAX_RANKS || c->rank < 0 || c->rank >= c->nranks) {
        dsm_err(err, "rank %d of %d: ranks must number 1 to %d", c->rank, c->nranks,
                DSM_MAX_RANKS);
        return DSM_EINVAL;
    }
    if (!c->nlocks) {
        dsm_err(err, "there must be at least one lock (DSM_LOCKS)");
        return DSM_EINVAL;
    }
    if (!c->size || c->size % ps || c->base % ps || !c->block_pages) {
        dsm_err(err, "size %llu and base 0x%llx must be non-zero multiples of the page "
                "size %llu, and block_pages at least 1", (unsigned long long)c->size,
                (unsigned long long)c->base, (unsigned long long)ps);
        return DSM_EINVAL;
    }
    for (r = 0; r < c->nranks; r++)
        if (r != c->rank && peer_fds[r] < 0) {
            dsm_err(err, "no connection to rank %d", r);
            return DSM_EINVAL;
        }
    return DSM_OK;
}

static void on_fault(void *ctx, uint64_t offset, int write)
{
    struct dsm *d = ctx;
    coh_fault(&d->coh, offset / d->core.page_size, write);
}

int dsm_start(const struct dsm_config *cfg, const int *peer_fds, char *err)
{
    struct core *c = &D.core;
    int rc;
    if (c->phase != PHASE_IDLE) {
        dsm_err(err, "the DSM was already started in this process");
        return DSM_ESTATE;
    }
    if ((rc = check_config(cfg, peer_fds, err)))
        return rc;
    core_init(c);
    c->rank = cfg->rank;
    c->nranks = cfg->nranks;
    c->debug = cfg->debug;
    c->page_size = dsm_page_size();
    c->npages = cfg->size / c->page_size;
    c->block = cfg->block_pages;
    c->hold_ns = (uint64_t)cfg->hold_us * 1000;
    c->readahead = cfg->readahead ? cfg->readahead : 1;
    c->spin_ns = (uint64_t)cfg->spin_us * 1000;
    c->heartbeat_ns = (uint64_t)cfg->heartbeat_ms * 1000000;
    if ((rc = region_map(&D.region, c, cfg->base, cfg->size, err)))
        return rc;
    if ((rc = comm_open(&D.tp, c, peer_fds, cfg->master_fd, err)))
        goto err_region;
    if ((rc = coh_init(&D.coh, c, &D.tp, err)))
        goto err_comm;
    coh_pin_init(&D.coh);
    if ((rc = sync_init(&D.sync, c, &D.tp, cfg->nlocks, err)))
        goto err_coh;
    if ((rc = fault_install((uintptr_t)D.region.app, cfg->size, on_fault, &D, err)))
        goto err_sync;
    c->phase = PHASE_RUNNING;
    if (!(rc = comm_run(&D.tp, err)))
        return DSM_OK;
    c->phase = PHASE_IDLE;
err_sync:
    sync_free(&D.sync);
err_coh:
    coh_free(&D.coh);
err_comm:
    comm_close(&D.tp);
err_region:
    region_unmap(&D.region);
    return rc;
}

/* Running, and pages [first, first + n) are in the region?  DSM_OK or
 * the error. */
static int check_pages(uint64_t first, uint64_t n, char *err)
{
    int rc;
    if ((rc = core_running(&D.core, err)))
        return rc;
    if (first >= D.core.npages || n > D.core.npages - first) {
        dsm_err(err, "pages %llu..%llu are outside the region's %llu pages",
                (unsigned long long)first, (unsigned long long)(first + n),
                (unsigned long long)D.core.npages);
        return DSM_EINVAL;
    }
    return DSM_OK;
}

int dsm_prefetch(uint64_t first, uint64_t n, int write, char *err)
{
    int rc = check_pages(first, n, err);
    return rc ? rc : coh_prefetch(&D.coh, first, n, write, 0, 0, err);
}

int dsm_pin(uint64_t first, uint64_t n, int write, uint32_t timeout_ms, char *err)
{
    int rc = check_pages(first, n, err);
    return rc ? rc : coh_prefetch(&D.coh, first, n, write, 1,
                                  now_ns() + timeout_ms * 1000000ULL, err);
}

int dsm_unpin(uint64_t first, uint64_t n, char *err)
{
    int rc = check_pages(first, n, err);
    return rc ? rc : coh_unpin_wait(&D.coh, first, n, err);
}

int dsm_barrier(char *err)
{
    int rc = core_running(&D.core, err);
    return rc ? rc : sync_barrier(&D.sync, err);
}

int dsm_bcast(int root, const void *data, uint32_t len, void **out, uint32_t *out_len,
              char *err)
{
    int rc;
    *out = NULL;
    *out_len = 0;
    if ((rc = core_running(&D.core, err)))
        return rc;
    if (root < 0 || root >= D.core.nranks || len > DSM_MAX_BCAST) {
        dsm_err(err, "bcast from root %d of %u bytes: the root must be 0..%d and the value "
                "at most %u bytes", root, len, D.core.nranks - 1, DSM_MAX_BCAST);
        return DSM_EINVAL;
    }
    return sync_bcast(&D.sync, root, data, len, out, out_len, err);
}

void dsm_buffer_free(void *buf)
{
    free(buf);
}

int dsm_lock_acquire(uint32_t lock, char *err)
{
    return sync_lock_acquire(&D.sync, lock, err);
}

int dsm_lock_release(uint32_t lock, char *err)
{
    return sync_lock_release(&D.sync, lock, err);
}

static int finished(void *arg)
{
    return ((struct core *)arg)->phase == PHASE_FINISHED;
}

/* DSM_FINALIZE goes to our own comm thread, which tells every peer and
 * stops once all have said it and the connections are drained. */
int dsm_finalize(char *err)
{
    struct core *c = &D.core;
    struct msg m = { .type = DSM_FINALIZE, .origin = (uint16_t)c->rank };
    int rc;
    pthread_mutex_lock(&c->mu);
    if (!(rc = core_running(c, err)) && (rc = tp_send_app_wait(&D.tp, c->rank, &m, NULL)))
        dsm_err(err, "%s", c->failure);
    if (!rc)
        rc = core_wait(c, finished, c, 0, err);
    pthread_mutex_unlock(&c->mu);
    if (!rc)
        comm_join(&D.tp);
    return rc;
}

int dsm_handler_ensure(void)
{
    return D.core.phase == PHASE_IDLE ? DSM_ESTATE : fault_ensure();
}

int dsm_page_prot(uint64_t page)
{
    return D.core.pages && page < D.core.npages ? D.core.pages[page].prot : -1;
}

int dsm_pages_given_up(uint64_t first, uint64_t n, uint32_t *out)
{
    uint64_t i;
    if (!D.core.pages || first > D.core.npages || n > D.core.npages - first)
        return DSM_EINVAL;
    for (i = 0; i < n; i++)
        out[i] = D.core.pages[first + i].given_up;
    return DSM_OK;
}

int dsm_page_home(uint64_t page)
{
    return D.core.nranks ? page_home(&D.core, page) : -1;
}

void dsm_get_stats(struct dsm_stats *out)
{
    pthread_mutex_lock(&D.core.mu);
    *out = D.core.stats;
    pthread_mutex_unlock(&D.core.mu);
}
