/* Layer 4: the entry points cffi sees (dsm_api.h).  One rank's core is the
 * `struct dsm` below, the only instance of the layers' state in a real
 * process: configuration is checked here and the pieces are started in
 * order (region, transport, protocols, handler, comm thread) and undone in
 * reverse. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "coherence.h"
#include "comm.h"
#include "fault.h"
#include "waitsig.h"
#include "region.h"
#include "coll.h"
#include "locks.h"

#ifndef DSM_BUILD_VERSION
#define DSM_BUILD_VERSION "unknown"
#endif

static struct dsm {
    struct core core;
    struct region region;
    struct transport tp;
    struct coh coh;
    struct coll coll;
    struct locks locks;
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

/* In a child forked while the core runs: no page stays accessible, so the
 * child's first touch faults and coh_fault refuses it on every rank alike. */
static void revoke_in_child(void)
{
    if (D.core.phase == PHASE_RUNNING)
        region_revoke(&D.region);
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
    c->release = cfg->consistency == DSM_RELEASE;
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
    if ((rc = coh_init(&D.coh, c, &D.tp, (uint64_t)cfg->twin_limit_mb << 20, err)))
        goto err_comm;
    coh_pin_init(&D.coh);
    if ((rc = coll_init(&D.coll, c, &D.tp, err)))
        goto err_coh;
    if ((rc = locks_init(&D.locks, c, &D.tp, cfg->nlocks, err)))
        goto err_coll;
    if ((rc = fault_install((uintptr_t)D.region.app, cfg->size, on_fault, &D, err)))
        goto err_locks;
    if ((rc = waitsig_install(c, err)))
        goto err_locks;
    c->pid = getpid();
    static int at_fork;                 /* registered once per process */
    if (!at_fork++)
        pthread_atfork(NULL, NULL, revoke_in_child);
    c->phase = PHASE_RUNNING;
    if (!(rc = comm_run(&D.tp, cfg->wait_reply, err)))
        return DSM_OK;
    c->phase = PHASE_IDLE;
    waitsig_remove();
err_locks:
    locks_free(&D.locks);
err_coll:
    coll_free(&D.coll);
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
    int rc = check_pages(first, n, err), note;
    if (rc)
        return rc;
    note = core_note_wait(&D.core, WAIT_PAGES, first, n);
    rc = coh_prefetch(&D.coh, first, n, write, 0, 0, err);
    core_end_wait(&D.core, note);
    return rc;
}

int dsm_pin(uint64_t first, uint64_t n, int write, uint32_t timeout_ms, char *err)
{
    int rc = check_pages(first, n, err), note;
    if (!rc && D.core.release) {
        dsm_err(err, "pinning is for sequential consistency; in release mode copy the data "
                "out (bytes(), tobytes()) between synchronisations");
        return DSM_EINVAL;
    }
    if (rc)
        return rc;
    note = core_note_wait(&D.core, WAIT_PAGES, first, n);
    rc = coh_prefetch(&D.coh, first, n, write, 1, now_ns() + timeout_ms * 1000000ULL, err);
    core_end_wait(&D.core, note);
    return rc;
}

int dsm_unpin(uint64_t first, uint64_t n, char *err)
{
    int rc = check_pages(first, n, err);
    return rc ? rc : coh_unpin_wait(&D.coh, first, n, err);
}

static int flushed(void *arg)
{
    return rc_flushed(arg);
}

/* Release mode, caller holding core.mu: every write since the last release
 * is at its home. */
static int release_writes(char *err)
{
    rc_flush(&D.coh);
    return core_wait(&D.core, flushed, &D.coh, 0, err);
}

/* Release mode, caller holding core.mu: drop the copies the notices named. */
static int drop_noticed(char *err)
{
    uint32_t seq;
    for (;;) {      /* a step drops core.mu to send: the count is read before it */
        seq = core_seq(&D.core);
        if (rc_drop_step(&D.coh) || core_failed(&D.core))
            break;
        core_sleep(&D.core, seq, 0);
    }
    if (!core_failed(&D.core))
        return DSM_OK;
    dsm_err(err, "%s", D.core.failure);
    return DSM_EPEER;
}

/* Release mode: every collective is also a barrier of the memory.  Each
 * rank sends its writes home, the ranks exchange their write notices, and
 * each drops the copies others wrote. */
static int memory_barrier(char *err)
{
    struct coll_call call = { .kind = DSM_COLL_GATHER, .root = DSM_ROOT_ALL };
    unsigned char *notices = NULL;
    void *all = NULL;
    uint64_t len = 0;
    int rc;
    core_lock(&D.core);
    if (!(rc = release_writes(err)) && rc_notices(&D.coh, 0, &notices, &len))
        rc = dsm_err_sys(err, ENOMEM, "write notices");
    core_unlock(&D.core);
    call.data = notices;
    call.len = len;
    if (!rc)
        rc = coll_run(&D.coll, &call, &all, &len, err);
    free(notices);
    core_lock(&D.core);
    if (!rc) {
        rc_barrier(&D.coh, all, len);
        rc = drop_noticed(err);
    }
    core_unlock(&D.core);
    free(all);
    return rc;
}

/* An application wait that ended: its time into *counter (a dsm_stats
 * field) and, when tracing, an event of `kind` about `arg`. */
static void waited(uint64_t *counter, int kind, uint64_t arg, uint64_t t0)
{
    uint64_t dur = now_ns() - t0;
    __atomic_fetch_add(counter, dur, __ATOMIC_RELAXED);
    TRACE_EVENT(&D.core, kind, arg, D.core.rank, 0, t0, dur);
}

int dsm_barrier(char *err)
{
    struct coll_call call = { .kind = DSM_COLL_BARRIER };
    void *out;
    uint64_t len, t0 = now_ns();
    int note = core_note_wait(&D.core, WAIT_COLL, DSM_COLL_BARRIER, coll_count(&D.coll));
    int rc = D.core.release ? memory_barrier(err) : coll_run(&D.coll, &call, &out, &len, err);
    core_end_wait(&D.core, note);
    waited(&D.core.stats.sync_wait_ns, DSM_EV_SYNC, DSM_COLL_BARRIER, t0);
    return rc;
}

static int collective(int kind, int root, int op, int dtype, uint64_t sig, const void *data,
                      uint64_t len, void **out, uint64_t *out_len, char *err)
{
    struct coll_call call = { kind, root, op, dtype, sig, data, len };
    int rc, all = root == DSM_ROOT_ALL && (kind == DSM_COLL_REDUCE || kind == DSM_COLL_GATHER);
    *out = NULL;
    *out_len = 0;
    if ((rc = core_running(&D.core, err)))
        return rc;
    if (kind < DSM_COLL_BARRIER || kind > DSM_COLL_GATHER ||
        ((root < 0 || root >= D.core.nranks) && !all) || len > DSM_MAX_COLL / 2) {
        dsm_err(err, "collective %d from root %d of %llu bytes: the root must be 0..%d and "
                "the value at most %u bytes", kind, root, (unsigned long long)len,
                D.core.nranks - 1, DSM_MAX_COLL / 2);
        return DSM_EINVAL;
    }
    if (D.core.release && (rc = memory_barrier(err)))
        return rc;
    return coll_run(&D.coll, &call, out, out_len, err);
}

int dsm_collective(int kind, int root, int op, int dtype, uint64_t sig, const void *data,
                   uint64_t len, void **out, uint64_t *out_len, char *err)
{
    uint64_t t0 = now_ns();
    int note = core_note_wait(&D.core, WAIT_COLL, (uint64_t)kind, coll_count(&D.coll));
    int rc = collective(kind, root, op, dtype, sig, data, len, out, out_len, err);
    core_end_wait(&D.core, note);
    waited(&D.core.stats.sync_wait_ns, DSM_EV_SYNC, (uint64_t)kind, t0);
    return rc;
}

/* What identifies a placement, for the barrier that checks every rank
 * asked for the same one (FNV-1a). */
static uint64_t place_sig(uint64_t first, uint64_t n, const uint16_t *homes)
{
    uint64_t h = 0xcbf29ce484222325ULL, i, v[2] = { first, n };
    const unsigned char *b = (const unsigned char *)v;
    for (i = 0; i < sizeof v; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    for (i = 0; i < n; i++)
        h = (h ^ homes[i]) * 0x100000001b3ULL;
    return h;
}

static int place_settled(void *arg)
{
    const uint64_t *range = arg;
    return coh_place_settled(&D.coh, range[0], range[1]);
}

/* The order of coherence.h's placement steps, between two barriers: the
 * first also checks that every rank asked for the same placement, and the
 * second keeps every rank from asking a new home before it knows it is
 * one.  Release mode moves no home here: its homes follow single writers
 * at barriers already, so a placement is only the barrier. */
int dsm_place(uint64_t first, uint64_t n, const uint16_t *homes, char *err)
{
    struct coll_call call = { .kind = DSM_COLL_BARRIER };
    uint64_t range[2] = { first, n }, i, len;
    void *out;
    int rc = core_running(&D.core, err), valid = !check_pages(first, n, err);
    if (!rc && valid && !D.core.release) {          /* no read-ahead of ours still coming */
        core_lock(&D.core);
        rc = core_wait(&D.core, place_settled, range, 0, err);
        core_unlock(&D.core);
    }
    if (!rc)
        rc = collective(DSM_COLL_BARRIER, 0, 0, 0, place_sig(first, valid ? n : 0, homes),
                        NULL, 0, &out, &len, err);
    if (rc || (rc = check_pages(first, n, err)))    /* the same verdict on every rank */
        return rc;
    for (i = 0; i < n; i++)
        if (homes[i] >= D.core.nranks) {
            dsm_err(err, "page %llu: home %u is not a rank of 0..%d",
                    (unsigned long long)(first + i), homes[i], D.core.nranks - 1);
            return DSM_EINVAL;
        }
    if (D.core.release)
        return DSM_OK;
    if (!(rc = coh_place(&D.coh, first, n, homes, err)))
        rc = coll_run(&D.coll, &call, &out, &len, err);
    return rc;
}

int dsm_agree(uint64_t value, uint64_t *all, char *err)
{
    uint64_t mine = htole64(value), len, v;
    struct coll_call call = { .kind = DSM_COLL_GATHER, .root = DSM_ROOT_ALL, .data = &mine,
                              .len = sizeof mine };
    uint32_t tag[2];
    unsigned char *out = NULL;
    uint64_t at;
    int rc = coll_run(&D.coll, &call, (void **)&out, &len, err);
    for (at = 0; !rc && at + 16 <= len; at += 16) {
        memcpy(tag, out + at, 8);
        memcpy(&v, out + at + 8, 8);
        if (le32toh(tag[0]) < (uint32_t)D.core.nranks)
            all[le32toh(tag[0])] = le64toh(v);
    }
    free(out);
    return rc;
}

void dsm_buffer_free(void *buf)
{
    free(buf);
}

/* In release mode, the notices a lock just brought take effect here. */
static int lock_notices(uint32_t lock, char *err)
{
    struct lock_value notices;
    int rc;
    core_lock(&D.core);
    notices = locks_value(&D.locks, lock);
    rc_acquire(&D.coh, notices.data, notices.len);
    rc = drop_noticed(err);
    core_unlock(&D.core);
    return rc;
}

/* In release mode a lock brings the write notices of its earlier holders,
 * and takes ours on. */
int dsm_lock_acquire(uint32_t lock, char *err)
{
    uint64_t t0 = now_ns();
    int note = core_note_wait(&D.core, WAIT_LOCK, lock, 0);
    int rc = locks_acquire(&D.locks, lock, err);
    core_end_wait(&D.core, note);
    waited(&D.core.stats.lock_wait_ns, DSM_EV_LOCK, lock, t0);
    return rc || !D.core.release ? rc : lock_notices(lock, err);
}

int dsm_lock_release(uint32_t lock, char *err)
{
    struct lock_value notices = { NULL, 0 };
    uint64_t len = 0;
    int rc = DSM_OK;
    if (D.core.release) {
        core_lock(&D.core);
        if (!(rc = core_running(&D.core, err)) && !(rc = release_writes(err)) &&
            rc_notices(&D.coh, 1, &notices.data, &len))
            rc = dsm_err_sys(err, ENOMEM, "write notices");
        notices.len = (uint32_t)len;
        core_unlock(&D.core);
    }
    return rc ? rc : locks_release(&D.locks, lock, notices, err);
}

static int finished(void *arg)
{
    return ((struct core *)arg)->phase == PHASE_FINISHED;
}

/* No page of ours is still asked for: a read-ahead run may be on its way. */
static int settled(void *arg)
{
    const struct core *c = arg;
    uint64_t p;
    for (p = 0; p < c->npages; p++)
        if (c->pages[p].pending)
            return 0;
    return 1;
}

/* DSM_FINALIZE goes to our own comm thread, which tells every peer and
 * stops once all have said it and the connections are drained. */
int dsm_finalize(char *err)
{
    struct core *c = &D.core;
    struct msg m = { .type = DSM_FINALIZE, .origin = (uint16_t)c->rank };
    int rc, note = core_note_wait(c, WAIT_FINALIZE, 0, 0);
    core_lock(c);
    m.coll.epoch = coll_count(&D.coll);
    /* Settled first: a page that came after DSM_FINALIZE would be confirmed
     * to its home (DSM_UPDATE) over a connection already shut. */
    if (!(rc = core_running(c, err)) && !(rc = core_wait(c, settled, c, 0, err)) &&
        (rc = tp_send_app_wait(&D.tp, c->rank, &m, NULL)))
        dsm_err(err, "%s", c->failure);
    if (!rc)
        rc = core_wait(c, finished, c, 0, err);
    core_unlock(c);
    core_end_wait(c, note);
    if (!rc) {
        comm_join(&D.tp);
        waitsig_remove();
        region_revoke(&D.region);
    }
    return rc;
}

uint64_t dsm_describe_waits(char *buf, uint64_t len)
{
    return core_describe_waits(&D.core, buf, len);
}

int dsm_failed_peer(void)
{
    return core_failed(&D.core) ? D.core.failed_peer : -1;
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
    return D.core.nranks && page < D.core.npages ? page_home(&D.core, page) : -1;
}

void dsm_get_stats(struct dsm_stats *out)
{
    core_lock(&D.core);
    *out = D.core.stats;
    core_unlock(&D.core);
}

int dsm_trace_start(uint64_t capacity, char *err)
{
    struct trace *t;
    int rc;
    if ((rc = core_running(&D.core, err)))
        return rc;
    if (D.core.trace) {
        dsm_err(err, "the trace was already started");
        return DSM_ESTATE;
    }
    if (!(t = trace_new(capacity)))
        return dsm_err_sys(err, ENOMEM, "trace of %llu events", (unsigned long long)capacity);
    __atomic_store_n(&D.core.trace, t, __ATOMIC_RELEASE);
    return DSM_OK;
}

uint64_t dsm_trace_count(uint64_t *dropped)
{
    *dropped = 0;
    return D.core.trace ? trace_count(D.core.trace, dropped) : 0;
}

uint64_t dsm_trace_read(struct dsm_event *out, uint64_t max)
{
    uint64_t dropped, n = dsm_trace_count(&dropped);
    n = n < max ? n : max;
    if (n)
        memcpy(out, D.core.trace->ev, n * sizeof *out);
    return n;
}

/* ---------------------------------------------------------- libdsm.sync */

int dsm_lock_acquire_within(uint32_t lock, uint32_t timeout_ms, char *err)
{
    uint64_t t0 = now_ns();
    int note = core_note_wait(&D.core, WAIT_LOCK, lock, 0);
    int rc = locks_acquire_within(&D.locks, lock, timeout_ms, err);
    core_end_wait(&D.core, note);
    if (!rc)
        waited(&D.core.stats.lock_wait_ns, DSM_EV_LOCK, lock, t0);
    return rc || !D.core.release ? rc : lock_notices(lock, err);
}

int dsm_lock_held(uint32_t lock)
{
    int held;
    core_lock(&D.core);
    held = D.core.phase == PHASE_RUNNING && lock < D.locks.n && locks_held(&D.locks, lock);
    core_unlock(&D.core);
    return held;
}

int dsm_post(int rank, uint64_t key, char *err)
{
    return mbox_post(&D.locks.mbox, rank, key, err);
}

int dsm_take(uint64_t key, uint32_t timeout_ms, char *err)
{
    return mbox_take(&D.locks.mbox, key, timeout_ms, err);
}

/* ---------------------------------------------------------- libdsm.checkpoint */

int dsm_region_fd(void)
{
    return D.region.memfd;
}

void dsm_trace_note(int kind, uint64_t arg, uint64_t start_ns, uint64_t dur_ns)
{
    TRACE_EVENT(&D.core, kind, arg, D.core.rank, 0, start_ns, dur_ns);
}

int dsm_page_prots(uint64_t first, uint64_t n, uint8_t *out, char *err)
{
    uint64_t i;
    int rc = check_pages(first, n, err);
    for (i = 0; !rc && i < n; i++)
        out[i] = D.core.pages[first + i].prot;
    return rc;
}
