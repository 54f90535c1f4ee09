/* Layer 4: the entry points cffi sees (dsm_api.h).  One rank's core is the
 * `struct dsm` below, the only instance of the layers' state in a real
 * process: configuration is checked here and the pieces are started in
 * order (region, transport, protocols, handler, comm thread) and undone in
 * reverse.  Every blocking call is an operation of ops.h: checked here,
 * then stepped by run() until it is done. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "comm.h"
#include "hostmem.h"
#include "fault.h"
#include "ops.h"
#include "waitsig.h"
#include "region.h"

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
    struct ops ops;
    struct host_tables hosts;       /* core.leaders, host_of, locals, leader_of */
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

static int check_config(const struct dsm_config *c, char *err)
{
    uint64_t ps = dsm_page_size();
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
    return DSM_OK;
}

static int run(struct op *o);

/* hostmem's `across` (share=host on several hosts, sequential mode): the
 * leaders' level of a host collective, or a large reduce among all the
 * ranks, run by the application thread of hostcoll.c's collective; or,
 * join 0, only counted. */
static int across_hosts(const struct coll_call *call, int join, void **out, uint64_t *len,
                        char *err)
{
    struct op o = { .kind = OP_COLL, .bare = 1, .err = err, .call = *call };
    int rc;
    *out = NULL;
    *len = 0;
    if (!join) {
        core_lock(&D.core);
        coll_skip(&D.coll);
        core_unlock(&D.core);
        return DSM_OK;
    }
    rc = run(&o);
    *out = o.out;
    *len = o.out_len;
    return rc;
}

/* In the SIGSEGV handler: it only takes core.mu (never held by a thread
 * that can fault on the region) and sends requests. */
static void on_fault(void *ctx, uint64_t offset, int write)
{
    struct dsm *d = ctx;
    struct core *c = &d->core;
    char err[DSM_ERRLEN];
    struct op o = { .kind = OP_FAULT, .f = { .first = offset / c->page_size, .write = write },
                    .err = err };
    uint64_t t0 = now_ns(), dur;
    int note;
    if (c->pid && getpid() != c->pid)   /* a child has no comm thread; c->mu may be held */
        dsm_panic(c->rank, "page %llu touched in process %d, forked after libdsm.init() in "
                  "process %d: only the process that called init() can use DSM memory; fork "
                  "before init(), or start children with multiprocessing's 'spawn'",
                  (unsigned long long)o.f.first, (int)getpid(), (int)c->pid);
    note = core_note_wait(c, WAIT_PAGE, o.f.first, (uint64_t)page_home(c, o.f.first));
    if (run(&o))
        dsm_panic(c->rank, "%s", err);
    core_end_wait(c, note);
    dur = now_ns() - t0;
    __atomic_fetch_add(&c->stats.fault_wait_ns, dur, __ATOMIC_RELAXED);
    TRACE_EVENT(c, DSM_EV_FAULT, o.f.first, c->rank, o.f.write, t0, dur);
}

/* In a child forked while the core runs: no page stays accessible, so the
 * child's first touch faults and on_fault refuses it on every rank alike. */
static void revoke_in_child(void)
{
    if (D.core.phase == PHASE_RUNNING)
        region_revoke(&D.region);
}

int dsm_start(const struct dsm_config *cfg, const int *peer_fds, const int *leaders, char *err)
{
    struct core *c = &D.core;
    int rc;
    if (c->phase != PHASE_IDLE) {
        dsm_err(err, "the DSM was already started in this process");
        return DSM_ESTATE;
    }
    if ((rc = check_config(cfg, err)))
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
    if (hostmem_hosts() > 1 && !leaders) {
        dsm_err(err, "share=host on %d hosts: no host leaders given", hostmem_hosts());
        return DSM_EINVAL;
    }
    /* before the region, whose first protections follow the homes */
    if (hostmem_hosts() > 1 && (rc = core_take_hosts(c, leaders, &D.hosts, err)))
        return rc;
    if ((rc = region_map(&D.region, c, cfg->base, cfg->size, err)))
        return rc;
    if (c->nranks > DSM_MAX_RANK_COPIES && !hostmem_get()) {    /* the region took no memfd */
        dsm_err(err, "%d ranks: a job where every rank keeps its own copy of each page "
                "(share='rank') has at most %d (copysets are 64-bit masks of ranks); share "
                "memory per host (DSM_SHARE=host) for more", c->nranks, DSM_MAX_RANK_COPIES);
        rc = DSM_EINVAL;
        goto err_region;
    }
    if ((rc = comm_open(&D.tp, c, peer_fds, leaders, cfg->master_fd, err)))
        goto err_region;
    if ((rc = ops_init(&D.ops, c, &D.tp, &D.coh, &D.coll, &D.locks,
                       (uint64_t)cfg->twin_limit_mb << 20, cfg->nlocks, err)))
        goto err_comm;
    if ((rc = fault_install((uintptr_t)D.region.app, cfg->size, on_fault, &D, err)))
        goto err_ops;
    if ((rc = waitsig_install(c, err)))
        goto err_ops;
    c->pid = getpid();
    static int at_fork;                 /* registered once per process */
    if (!at_fork++)
        pthread_atfork(NULL, NULL, revoke_in_child);
    if (c->nleaders && !c->release)
        hostmem_get()->across = across_hosts;
    c->phase = PHASE_RUNNING;
    if (!(rc = comm_run(&D.tp, cfg->wait_reply, err)))
        return DSM_OK;
    c->phase = PHASE_IDLE;
    waitsig_remove();
err_ops:
    ops_free(&D.ops);
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

struct moved {
    struct core *c;
    uint32_t seq;
};

/* Has a wake-up come since the step read the event count? */
static int moved(void *arg)
{
    struct moved *m = arg;
    return core_seq(m->c) != m->seq || core_failed(m->c);
}

/* The one way an operation waits: take core.mu, read the event count,
 * step; on OP_WAIT spin a while (op_spin), then sleep on the count (until
 * the op's deadline, if any), and step again, until it is done.  DSM_OK,
 * or the op's error with err filled. */
static int run(struct op *o)
{
    struct core *c = &D.core;
    struct moved m = { c, 0 };
    int st, spin;
    core_lock(c);
    for (;;) {
        m.seq = core_seq(c);            /* before the step, which may drop core.mu */
        if ((st = op_step(&D.ops, o)) == OP_DONE || st == OP_ERROR)
            break;
        if (st == OP_AGAIN)
            continue;
        if ((spin = op_spin(o)) >= 0) {
            core_spin(c, moved, &m, spin);
            if (moved(&m))
                continue;
        }
        if (core_sleep_until(c, m.seq, o->deadline)) {
            op_timeout(&D.ops, o);
            st = OP_ERROR;
            break;
        }
    }
    core_unlock(c);
    op_end(o);
    return st == OP_DONE ? DSM_OK : o->rc;
}

/* An application wait that ended: its time into *counter (a dsm_stats
 * field) and, when tracing, an event of `kind` about `arg`. */
static void waited(uint64_t *counter, int kind, uint64_t arg, uint64_t t0)
{
    uint64_t dur = now_ns() - t0;
    __atomic_fetch_add(counter, dur, __ATOMIC_RELAXED);
    TRACE_EVENT(&D.core, kind, arg, D.core.rank, 0, t0, dur);
}

static int unpin(uint64_t first, uint64_t n, char *err)
{
    struct op o = { .kind = OP_UNPIN, .f = { .first = first, .end = first + n }, .err = err };
    return run(&o);
}

/* Fetch pages [first, first + n), pinning each if `pin`: all or none
 * stay pinned. */
static int fetch(uint64_t first, uint64_t n, int write, int pin, uint64_t deadline, char *err)
{
    struct op o = { .kind = OP_FETCH, .deadline = deadline, .err = err,
                    .f = { .first = first, .end = first + n, .write = write, .pin = pin } };
    char scratch[DSM_ERRLEN];
    int note = core_note_wait(&D.core, WAIT_PAGES, first, n), rc = run(&o);
    core_end_wait(&D.core, note);
    if (rc && pin && o.f.at > first)    /* the job's failure is in err */
        unpin(first, o.f.at - first, scratch);
    return rc;
}

int dsm_prefetch(uint64_t first, uint64_t n, int write, char *err)
{
    int rc = check_pages(first, n, err);
    return rc ? rc : fetch(first, n, write, 0, 0, err);
}

int dsm_pin(uint64_t first, uint64_t n, int write, uint32_t timeout_ms, char *err)
{
    int rc = check_pages(first, n, err);
    if (!rc && D.ops.mode->pin_refused) {
        dsm_err(err, "%s", D.ops.mode->pin_refused);
        return DSM_EINVAL;
    }
    return rc ? rc : fetch(first, n, write, 1, now_ns() + timeout_ms * 1000000ULL, err);
}

int dsm_unpin(uint64_t first, uint64_t n, char *err)
{
    int rc = check_pages(first, n, err);
    return rc ? rc : unpin(first, n, err);
}

/* A collective operation, noted and timed as the application's wait. */
static int collective(struct op *o)
{
    uint64_t t0 = now_ns();
    int note = core_note_wait(&D.core, WAIT_COLL, (uint64_t)o->call.kind, coll_count(&D.coll));
    int rc = run(o);
    core_end_wait(&D.core, note);
    waited(&D.core.stats.sync_wait_ns, DSM_EV_SYNC, (uint64_t)o->call.kind, t0);
    return rc;
}

int dsm_barrier(char *err)
{
    struct op o = { .kind = OP_COLL, .call = { .kind = DSM_COLL_BARRIER }, .err = err };
    int rc = collective(&o);
    free(o.out);
    return rc;
}

int dsm_collective(int kind, int root, int op, int dtype, uint64_t sig, const void *data,
                   uint64_t len, void **out, uint64_t *out_len, char *err)
{
    struct op o = { .kind = OP_COLL, .err = err,
                    .call = { .kind = kind, .root = root, .op = op, .dtype = dtype, .sig = sig,
                              .data = data, .len = len } };
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
    rc = collective(&o);
    *out = o.out;
    *out_len = o.out_len;
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

/* Bad arguments fail after the placement's first barrier, on every rank
 * alike (OP_PLACE's verdict). */
int dsm_place(uint64_t first, uint64_t n, const uint16_t *homes, char *err)
{
    struct op o = { .kind = OP_PLACE, .first = first, .n = n, .homes = homes, .err = err };
    uint64_t i;
    int rc = core_running(&D.core, err), valid;
    if (rc)
        return rc;
    valid = !(o.verdict = check_pages(first, n, err));
    for (i = 0; valid && i < n && !o.verdict; i++)
        if (homes[i] >= D.core.nranks) {
            dsm_err(err, "page %llu: home %u is not a rank of 0..%d",
                    (unsigned long long)(first + i), homes[i], D.core.nranks - 1);
            o.verdict = DSM_EINVAL;
        } else if (!homes_pages(&D.core, homes[i])) {
            dsm_err(err, "page %llu: home %u is not a host's leader: with share=host on "
                    "several hosts only each host's lowest rank homes pages",
                    (unsigned long long)(first + i), homes[i]);
            o.verdict = DSM_EINVAL;
        }
    o.call = (struct coll_call){ .kind = DSM_COLL_BARRIER,
                                 .sig = place_sig(first, valid ? n : 0, homes) };
    rc = collective(&o);
    free(o.out);
    return rc;
}

int dsm_agree(uint64_t value, uint64_t *all, char *err)
{
    uint64_t mine = htole64(value), len, v;
    struct op o = { .kind = OP_COLL, .bare = 1, .err = err,
                    .call = { .kind = DSM_COLL_GATHER, .root = DSM_ROOT_ALL, .data = &mine,
                              .len = sizeof mine } };
    uint32_t tag[2];
    unsigned char *out;
    uint64_t at;
    int rc = run(&o);
    out = o.out;
    len = o.out_len;
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

/* Acquire, within timeout_ms (UINT32_MAX: no limit; 0: try, never queue).
 * In release mode a lock brings the write notices of its earlier holders. */
static int acquire(uint32_t lock, uint32_t timeout_ms, char *err)
{
    struct op o = { .kind = OP_LOCK, .lock = lock, .try = !timeout_ms, .err = err,
                    .deadline = timeout_ms && timeout_ms != UINT32_MAX ?
                                now_ns() + timeout_ms * 1000000ULL : 0 };
    uint64_t t0 = now_ns();
    int note = core_note_wait(&D.core, WAIT_LOCK, lock, 0), rc = run(&o);
    core_end_wait(&D.core, note);
    if (!rc)
        waited(&D.core.stats.lock_wait_ns, DSM_EV_LOCK, lock, t0);
    return rc;
}

int dsm_lock_acquire(uint32_t lock, char *err)
{
    return acquire(lock, UINT32_MAX, err);
}

/* In release mode our writes go home first, and our notices with the lock. */
int dsm_lock_release(uint32_t lock, char *err)
{
    struct op o = { .kind = OP_UNLOCK, .lock = lock, .err = err };
    return run(&o);
}

int dsm_finalize(char *err)
{
    struct op o = { .kind = OP_FINALIZE, .err = err };
    int note = core_note_wait(&D.core, WAIT_FINALIZE, 0, 0), rc = run(&o);
    core_end_wait(&D.core, note);
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
    return acquire(lock, timeout_ms, err);
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
