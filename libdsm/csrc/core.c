/* The entry points the binding calls, and the small utilities every file
 * uses.  This is where configuration is checked and the pieces are started
 * in order: region, directory, handler, comm thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

struct dsm_state st = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
    .memfd = -1,
    .evfd = -1,
    .master_fd = -1,
};

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void dsm_err(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, DSM_ERRLEN, fmt, ap);
    va_end(ap);
}

/* One line to stderr with a single write; safe in the signal handler as
 * long as the format has no floating point. */
static void say(const char *tag, const char *fmt, va_list ap)
{
    char line[512];
    int n = snprintf(line, sizeof line, "libdsm: rank %d: %s", st.rank, tag);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(2, line, (size_t)n) < 0)
        return;
}

void dsm_trace(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say("", fmt, ap);
    va_end(ap);
}

/* The one can't-continue case: a faulting access that can never be served. */
void dsm_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say("fatal: ", fmt, ap);
    va_end(ap);
    _exit(1);
}

void dsm_core_version(int *major, int *minor)
{
    *major = DSM_CORE_MAJOR;
    *minor = DSM_CORE_MINOR;
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

static void undo_start(void)
{
    if (st.app)
        munmap(st.app, st.size);
    if (st.rw && st.rw != MAP_FAILED)
        munmap(st.rw, st.size);
    if (st.memfd >= 0)
        close(st.memfd);
    if (st.evfd >= 0)
        close(st.evfd);
    free(st.pages);
    st.app = st.rw = NULL;
    st.pages = NULL;
    st.memfd = st.evfd = -1;
}

int dsm_start(const struct dsm_config *c, const int *peer_fds, char *err)
{
    int rc;
    if (st.phase != PHASE_IDLE) {
        dsm_err(err, "the DSM was already started in this process");
        return DSM_ESTATE;
    }
    if ((rc = check_config(c, peer_fds, err)))
        return rc;
    st.rank = c->rank;
    st.nranks = c->nranks;
    st.debug = c->debug;
    st.base = c->base;
    st.size = c->size;
    st.page_size = dsm_page_size();
    st.npages = c->size / st.page_size;
    st.block = c->block_pages;
    st.hold_ns = (uint64_t)c->hold_us * 1000;
    st.readahead = c->readahead ? c->readahead : 1;
    st.spin_ns = (uint64_t)c->spin_us * 1000;
    st.master_fd = c->master_fd;
    if ((st.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        dsm_err(err, "eventfd: %s", strerror(errno));
        return DSM_ESYS;
    }
    if ((rc = region_map(err)) || (rc = coh_init(err)) || (rc = sync_init(c->nlocks, err)) ||
        (rc = fault_install(err))) {
        undo_start();
        return rc;
    }
    st.phase = PHASE_RUNNING;
    if ((rc = comm_start(peer_fds, err))) {
        st.phase = PHASE_IDLE;
        undo_start();
    }
    return rc;
}

/* Before sleeping on st.cv (caller holds st.mu): yield the CPU in a loop
 * for up to st.spin_ns while cond() is false.  A reply that comes within a
 * few tens of microseconds then finds this thread awake, which saves a
 * futex wake-up on the way back; yielding rather than spinning lets the
 * comm thread have the CPU at once.  With `poll_comm`, the comm thread
 * also polls without sleeping meanwhile, which saves its own wake-up when
 * the reply arrives (used for barriers and locks; for faults it cost more
 * than it saved, measured). */
void dsm_spin(int (*cond)(const void *), const void *arg, int poll_comm)
{
    uint64_t until;
    if (!st.spin_ns || cond(arg))
        return;
    until = now_ns() + st.spin_ns;
    if (poll_comm)
        __atomic_fetch_add(&st.busy_poll, 1, __ATOMIC_RELAXED);
    do {
        pthread_mutex_unlock(&st.mu);
        sched_yield();
        pthread_mutex_lock(&st.mu);
    } while (!cond(arg) && !st.failed && now_ns() < until);
    if (poll_comm)
        __atomic_fetch_sub(&st.busy_poll, 1, __ATOMIC_RELAXED);
}

/* DSM_OK if started and not finalized, else DSM_ESTATE with err filled. */
int dsm_running(char *err)
{
    if (st.phase == PHASE_RUNNING)
        return DSM_OK;
    dsm_err(err, st.phase == PHASE_IDLE ? "the DSM is not started" : "the DSM was finalized");
    return DSM_ESTATE;
}

int dsm_finalize(char *err)
{
    struct msg m = { .type = DSM_FINALIZE, .origin = (uint16_t)st.rank };
    int rc;
    pthread_mutex_lock(&st.mu);
    if (!(rc = dsm_running(err))) {
        while ((rc = comm_post(&m)) == DSM_ESTATE && !st.failed)
            pthread_cond_wait(&st.cv, &st.mu);
        while (st.phase != PHASE_FINISHED && !st.failed)
            pthread_cond_wait(&st.cv, &st.mu);
        if (st.phase != PHASE_FINISHED) {
            dsm_err(err, "%s", st.failure);
            rc = DSM_EPEER;
        }
    }
    pthread_mutex_unlock(&st.mu);
    if (!rc)
        pthread_join(st.thread, NULL);
    return rc;
}

int dsm_handler_ensure(void)
{
    return st.phase == PHASE_IDLE ? DSM_ESTATE : fault_ensure();
}

int dsm_page_prot(uint64_t page)
{
    return st.pages && page < st.npages ? st.pages[page].prot : -1;
}

int dsm_pages_given_up(uint64_t first, uint64_t n, uint32_t *out)
{
    uint64_t i;
    if (!st.pages || first > st.npages || n > st.npages - first)
        return DSM_EINVAL;
    for (i = 0; i < n; i++)
        out[i] = st.pages[first + i].given_up;
    return DSM_OK;
}

int dsm_page_home(uint64_t page)
{
    return st.nranks ? page_home(page) : -1;
}

void dsm_get_stats(struct dsm_stats *out)
{
    pthread_mutex_lock(&st.mu);
    *out = st.stats;
    out->vma_runs = st.runs;
    out->vma_budget = st.run_budget;
    pthread_mutex_unlock(&st.mu);
}
