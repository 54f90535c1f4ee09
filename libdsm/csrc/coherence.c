/* Sequential consistency by write-invalidate with multiple readers, after
 * IVY's distributed manager: every page has a round-robin home that keeps
 * its directory entry (owner and copyset) and serialises the faults on it.
 *
 *  read fault   R -REQ-> home -FWD-> owner -PAGE(data)-> R -UPDATE-> home
 *  write fault  home -INV-> each other copy -INV_ACK-> home, then as above;
 *               a requester that already holds a current copy gets a grant
 *               without data.
 *
 * A fault costs the same few messages however many ranks there are, plus
 * one INV/INV_ACK pair per copy that must go.  Only the comm thread runs
 * the handlers below; coh_fault runs in the faulting thread. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"

#define PREFETCH_CHUNK 1024     /* pages; two chunks at most in flight */

/* The home's view of a page. */
struct dir {
    uint64_t copyset;       /* ranks holding read copies, the owner excluded */
    uint16_t owner;         /* holds the current data, READ or RW */
    uint16_t origin;        /* the fault being served while busy */
    uint16_t acks;          /* INV_ACKs still to come */
    uint8_t busy;
    uint8_t mode;
};

/* A fault waiting at its home for an earlier one on the same page. */
struct waiter {
    uint64_t page;
    uint16_t origin;
    uint8_t mode;
    struct waiter *next;
};

static struct dir *dirs;
static struct waiter *wait_head, **wait_tail = &wait_head;

/* Index of a homed page in this rank's directory. */
static struct dir *dir_of(uint64_t page)
{
    uint64_t blk = page / st.block;
    return &dirs[(blk / (uint64_t)st.nranks) * st.block + page % st.block];
}

int coh_init(char *err)
{
    uint64_t nblocks = (st.npages + st.block - 1) / st.block;
    uint64_t mine = (nblocks + (uint64_t)st.nranks - 1) / (uint64_t)st.nranks;
    uint64_t p;
    dirs = calloc(mine * st.block, sizeof *dirs);
    if (!dirs) {
        dsm_err(err, "directory for %llu pages: out of memory",
                (unsigned long long)(mine * st.block));
        return DSM_ESYS;
    }
    for (p = 0; p < st.npages; p++)
        if (page_home(p) == st.rank)
            dir_of(p)->owner = (uint16_t)st.rank;
    return DSM_OK;
}

static void home_complete(uint64_t page, int mode, int origin);

/* ---------------------------------------------------------- requester */

/* Does the page allow the access already? */
static int satisfied(uint64_t page, int write)
{
    int prot = st.pages[page].prot;
    return prot == DSM_PROT_RW || (!write && prot == DSM_PROT_READ);
}

/* Ask the home for pages [page, page + n), all in one home block, and mark
 * them pending (caller holds st.mu, which this may drop and retake).  A
 * remote home gets the DSM_REQ straight from this thread; our own home
 * logic runs in the comm thread, so a local one is posted there.
 * Returns 1 if st.mu was dropped (the state must be looked at again). */
static int send_run(uint64_t page, uint64_t n, int write)
{
    uint8_t mode = write ? MODE_WRITE : MODE_READ;
    int home = page_home(page);
    struct msg m = { .type = DSM_REQ, .mode = mode, .origin = (uint16_t)st.rank, .page = page,
                     .arg = n };
    uint64_t i;
    if (home == st.rank && comm_post(&m) != DSM_OK)
        return 0;   /* the ring is full: wait for the comm thread to drain it */
    for (i = 0; i < n; i++)
        st.pages[page + i].pending = mode;
    if (home == st.rank)
        return 0;
    pthread_mutex_unlock(&st.mu);
    comm_send_app(home, &m, NULL, 0);
    pthread_mutex_lock(&st.mu);
    return 1;
}

/* Back the read/write view of pages about to arrive with memory now, in
 * the waiting thread, so the comm thread does not take a page fault (and
 * zero a page) for each page it copies in. */
static void populate(uint64_t first, uint64_t n)
{
    madvise(st.rw + first * st.page_size, n * st.page_size, MADV_POPULATE_WRITE);
}

/* Request up to `want` pages from `page` on: the run stops at the first
 * page that is already good enough or pending, and goes out as one DSM_REQ
 * per home block.  A `speculative` run (read-ahead) also stops at a page
 * whose read copy a writer has taken from us before: such a page is written
 * elsewhere, and fetching it unasked would only make its writer invalidate
 * it again.
 * Caller holds st.mu; returns 1 if it was dropped.  *got receives the
 * length of the run. */
static int request_run(uint64_t page, uint64_t want, int write, int speculative,
                       uint64_t *got)
{
    uint64_t n = 1, cut;
    int dropped = 0;
    while (n < want && page + n < st.npages && !st.pages[page + n].pending &&
           !satisfied(page + n, write) && !(speculative && st.pages[page + n].invalidated))
        n++;
    *got = n;
    st.stats.pages_prefetched += n - 1;
    while (n) {
        cut = (page / st.block + 1) * st.block - page;    /* to the block's end */
        cut = cut < n ? cut : n;
        dropped |= send_run(page, cut, write);
        page += cut;
        n -= cut;
    }
    return dropped;
}

/* A fault's request.  Reads that keep running into the page just past the
 * last run, upwards or downwards (memmove copies large buffers backwards),
 * fetch twice as many pages each time, up to the read-ahead limit. */
static int request(uint64_t page, int write)
{
    static uint64_t up_next = UINT64_MAX, down_next = UINT64_MAX, window = 1;
    uint64_t start = page, n;
    int down = page == down_next, dropped;
    *(write ? &st.stats.write_faults : &st.stats.read_faults) += 1;
    if (write)
        return request_run(page, 1, 1, 0, &n);
    window = page == up_next || down ? window * 2 : 1;
    if (window > st.readahead)
        window = st.readahead;
    while (down && page - start + 1 < window && start > 0 && !st.pages[start - 1].pending &&
           !satisfied(start - 1, 0) && !st.pages[start - 1].invalidated)
        start--;
    dropped = request_run(start, down ? page - start + 1 : window, 0, 1, &n);
    up_next = start + n;
    down_next = start ? start - 1 : UINT64_MAX;
    if (n > 1) {                /* back the pages the next run will want */
        uint64_t ahead = down ? (start > 2 * n ? start - 2 * n : 0) : start + n;
        uint64_t len = ahead + 2 * n <= st.npages ? 2 * n : st.npages - ahead;
        pthread_mutex_unlock(&st.mu);
        populate(ahead, len);
        pthread_mutex_lock(&st.mu);
        dropped = 1;
    }
    return dropped;
}

struct want {
    uint64_t page;
    int write;
};

/* Is there something for a faulting thread to do: the page arrived, or it
 * must ask again? */
static int fault_ready(const void *arg)
{
    const struct want *w = arg;
    return satisfied(w->page, w->write) || !st.pages[w->page].pending;
}

/* Block the faulting thread until the page allows the access.  Runs inside
 * the SIGSEGV handler: it only takes st.mu (never held by a thread that can
 * fault on the region) and posts a request to the comm thread. */
void coh_fault(uint64_t page, int write)
{
    pthread_mutex_lock(&st.mu);
    for (;;) {
        if (satisfied(page, write))
            break;
        if (st.failed) {
            pthread_mutex_unlock(&st.mu);
            dsm_panic("page %llu needed, but %s", (unsigned long long)page, st.failure);
        }
        if (st.phase != PHASE_RUNNING) {
            pthread_mutex_unlock(&st.mu);
            dsm_panic("page %llu touched %s", (unsigned long long)page,
                      st.phase == PHASE_FINISHED ? "after finalize()" : "before init()");
        }
        if (!st.pages[page].pending && request(page, write))
            continue;
        dsm_spin(fault_ready, &(struct want){ page, write }, 0);
        if (!fault_ready(&(struct want){ page, write }) && !st.failed)
            pthread_cond_wait(&st.cv, &st.mu);
    }
    pthread_mutex_unlock(&st.mu);
}

/* Request every page of [first, first + n) that needs it (caller holds
 * st.mu, which this may drop). */
static void request_range(uint64_t first, uint64_t n, int write)
{
    uint64_t p, got;
    for (p = first; p < first + n && !st.failed; p++)
        if (!satisfied(p, write) && !st.pages[p].pending)
            request_run(p, first + n - p, write, 0, &got);
}

/* Fetch pages [first, first + n) for reading or writing and wait for them:
 * the bulk form of a fault, with no signal per page.  At most two chunks
 * are in flight, so the owner never queues more than that for us. */
int dsm_prefetch(uint64_t first, uint64_t n, int write, char *err)
{
    uint64_t c, p, end = first + n, got;
    int rc;
    if ((rc = dsm_running(err)))
        return rc;
    if (first >= st.npages || n > st.npages - first) {
        dsm_err(err, "pages %llu..%llu are outside the region's %llu pages",
                (unsigned long long)first, (unsigned long long)end,
                (unsigned long long)st.npages);
        return DSM_EINVAL;
    }
    populate(first, end - first < PREFETCH_CHUNK ? end - first : PREFETCH_CHUNK);
    pthread_mutex_lock(&st.mu);
    request_range(first, end - first < PREFETCH_CHUNK ? end - first : PREFETCH_CHUNK, write);
    for (c = first; c < end && !st.failed; c += PREFETCH_CHUNK) {
        uint64_t stop = end - c < PREFETCH_CHUNK ? end : c + PREFETCH_CHUNK;
        uint64_t next = end - stop < PREFETCH_CHUNK ? end - stop : PREFETCH_CHUNK;
        if (next) {             /* the next chunk: memory first, then the request */
            pthread_mutex_unlock(&st.mu);
            populate(stop, next);
            pthread_mutex_lock(&st.mu);
            request_range(stop, next, write);
        }
        for (p = c; p < stop && !st.failed; ) {
            if (satisfied(p, write))
                p++;
            else if (st.pages[p].pending || !request_run(p, stop - p, write, 0, &got))
                pthread_cond_wait(&st.cv, &st.mu);
        }
    }
    rc = st.failed ? DSM_EPEER : DSM_OK;
    if (rc)
        dsm_err(err, "%s", st.failure);
    pthread_mutex_unlock(&st.mu);
    return rc;
}

/* Protection changes the comm thread batches, so that a burst of pages
 * costs one mprotect per run of consecutive pages: pages received but not
 * yet opened to the application (installs), and pages to downgrade before
 * they are sent (serves). */
#define BATCH_MAX 512
struct batched {
    uint64_t page;
    uint8_t prot;               /* the protection the page gets */
    uint8_t confirm;            /* installs: send DSM_UPDATE to the home */
    uint8_t mode;               /* serves: what the requester asked for */
    uint8_t data;               /* serves: send the data (else the requester has it) */
    uint16_t origin;            /* serves: the requester */
};
static struct batched installs[BATCH_MAX], serves[BATCH_MAX];
static unsigned n_installs, n_serves;

/* Apply the protections of a batch, one mprotect per run of consecutive
 * pages with the same protection.  Nonzero (the failure recorded) if one
 * could not be applied. */
static int protect_runs(const struct batched *b, unsigned n)
{
    unsigned i, j;
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && b[j].page == b[j - 1].page + 1 && b[j].prot == b[i].prot; j++)
            ;
        if (region_set_prot(b[i].page, j - i, b[i].prot))
            return 1;
    }
    return 0;
}

/* Open the received pages, wake the faulting threads, confirm to the homes. */
static void flush_installs(void)
{
    unsigned i;
    uint64_t now = now_ns();
    if (!n_installs)
        return;
    if (protect_runs(installs, n_installs)) {
        n_installs = 0;
        return;
    }
    pthread_mutex_lock(&st.mu);
    for (i = 0; i < n_installs; i++) {
        st.pages[installs[i].page].installed_ns = now;
        st.pages[installs[i].page].pending = 0;
    }
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
    for (i = 0; i < n_installs; i++) {
        struct msg up = { .type = DSM_UPDATE, .origin = (uint16_t)st.rank,
                          .page = installs[i].page,
                          .mode = installs[i].prot == DSM_PROT_RW ? MODE_WRITE : MODE_READ };
        if (installs[i].confirm)
            comm_send(page_home(installs[i].page), &up, NULL, 0);
    }
    n_installs = 0;
}

/* DSM_PAGE: copy the data (if any) in through the read/write view; the
 * page opens at the next coh_flush, before any other message is handled. */
static void on_page(const struct msg *m, const unsigned char *payload)
{
    if (payload)
        memcpy(st.rw + m->page * st.page_size, payload, st.page_size);
    installs[n_installs++] = (struct batched){
        .page = m->page, .prot = m->mode == MODE_WRITE ? DSM_PROT_RW : DSM_PROT_READ,
        .confirm = (m->arg & PAGE_NEEDS_UPDATE) != 0 };
    if (n_installs == BATCH_MAX)
        flush_installs();
}

/* ---------------------------------------------------------- owner, holder */

/* Within the hold window of a freshly received page, give it up later. */
static int held(const struct msg *m)
{
    uint64_t due = st.pages[m->page].installed_ns + st.hold_ns;
    if (st.hold_ns && now_ns() < due) {
        comm_defer(m, due);
        return 1;
    }
    return 0;
}

/* Send DSM_PAGE to the requester.  When the home itself sends it, the home
 * records the outcome at once: anything it sends the requester later travels
 * behind the page on the same connection, so no DSM_UPDATE is needed.  A
 * page from a third party asks the requester to confirm with DSM_UPDATE. */
static void send_page(uint64_t page, int mode, int origin, const void *data)
{
    struct msg out = { .type = DSM_PAGE, .mode = (uint8_t)mode, .origin = (uint16_t)origin,
                       .page = page };
    int home = page_home(page);
    out.arg = home == st.rank && origin != st.rank ? 0 : PAGE_NEEDS_UPDATE;
    comm_send(origin, &out, data, data ? (uint32_t)st.page_size : 0);
    if (!out.arg)
        home_complete(page, mode, origin);
}

/* Downgrade our copies first, so the data cannot change after it is read
 * from the read/write view, then send the pages. */
static void flush_serves(void)
{
    unsigned i;
    if (protect_runs(serves, n_serves)) {
        n_serves = 0;
        return;
    }
    for (i = 0; i < n_serves; i++) {
        st.pages[serves[i].page].given_up++;
        send_page(serves[i].page, serves[i].mode, serves[i].origin,
                  serves[i].data ? st.rw + serves[i].page * st.page_size : NULL);
    }
    n_serves = 0;
}

/* DSM_FWD: serve the page to the requester (at the next flush). */
static void on_fwd(const struct msg *m)
{
    if (held(m))
        return;
    if (st.pages[m->page].prot == DSM_PROT_NONE) {
        comm_fail("protocol error: asked to serve page %llu, which this rank does not hold",
                  (unsigned long long)m->page);
        return;
    }
    if (n_serves == BATCH_MAX)
        flush_serves();
    serves[n_serves++] = (struct batched){     /* we keep READ, or NONE for a writer */
        .page = m->page, .prot = m->mode == MODE_WRITE ? DSM_PROT_NONE : DSM_PROT_READ,
        .mode = m->mode, .data = !(m->arg & FWD_NODATA), .origin = m->origin };
}

/* DSM_INV: drop our read copy and acknowledge to the home. */
static void on_inv(const struct msg *m)
{
    struct msg ack = { .type = DSM_INV_ACK, .origin = m->origin, .page = m->page };
    if (held(m))
        return;
    if (region_set_prot(m->page, 1, DSM_PROT_NONE))
        return;
    st.stats.invalidations++;
    st.pages[m->page].given_up++;
    st.pages[m->page].invalidated = 1;
    comm_send(m->from, &ack, NULL, 0);
}

/* ---------------------------------------------------------- home */

/* Every other copy is gone: let the owner hand over (or grant directly). */
static void write_proceed(struct dir *d, uint64_t page)
{
    struct msg m = { .mode = MODE_WRITE, .origin = d->origin, .page = page };
    int has_copy = d->origin == d->owner || (d->copyset >> d->origin & 1);
    if (d->origin == d->owner) {
        send_page(page, MODE_WRITE, d->origin, NULL);
        return;
    }
    m.type = DSM_FWD;
    m.arg = has_copy ? FWD_NODATA : 0;
    comm_send(d->owner, &m, NULL, 0);
}

/* Start serving one fault at the home. */
static void home_start(uint64_t page, int origin, int mode)
{
    struct dir *d = dir_of(page);
    struct msg m = { .type = DSM_FWD, .mode = (uint8_t)mode, .origin = (uint16_t)origin,
                     .page = page };
    uint64_t targets;
    int r;
    d->busy = 1;
    d->origin = (uint16_t)origin;
    d->mode = (uint8_t)mode;
    if (mode == MODE_READ) {
        comm_send(d->owner, &m, NULL, 0);
        return;
    }
    targets = d->copyset & ~(1ULL << origin) & ~(1ULL << d->owner);
    d->acks = (uint16_t)__builtin_popcountll(targets);
    m.type = DSM_INV;
    for (r = 0; r < st.nranks; r++)
        if (targets >> r & 1)
            comm_send(r, &m, NULL, 0);
    if (!d->acks)
        write_proceed(d, page);
}

/* A fault on one page reaches its home: serve it now, or queue it behind
 * the one being served. */
static void home_request(uint64_t page, int origin, int mode)
{
    struct waiter *w;
    if (!dir_of(page)->busy) {
        home_start(page, origin, mode);
        return;
    }
    w = malloc(sizeof *w);
    if (!w) {
        comm_fail("out of memory queueing a request for page %llu", (unsigned long long)page);
        return;
    }
    *w = (struct waiter){ page, (uint16_t)origin, (uint8_t)mode, NULL };
    *wait_tail = w;
    wait_tail = &w->next;
}

/* DSM_REQ: `arg` pages from `page` on, all in one of our blocks. */
static void on_req(const struct msg *m)
{
    uint64_t i, n = m->arg ? m->arg : 1;
    if (n > st.npages - m->page || page_home(m->page) != st.rank ||
        m->page / st.block != (m->page + n - 1) / st.block) {
        comm_fail("protocol error: DSM_REQ from rank %d for %llu pages at %llu, not one of "
                  "our blocks", m->from, (unsigned long long)n, (unsigned long long)m->page);
        return;
    }
    for (i = 0; i < n; i++)
        home_request(m->page + i, m->origin, m->mode);
}

/* Serve the oldest fault that waited for this page, if any. */
static void home_next(uint64_t page)
{
    struct waiter **pp, *w;
    for (pp = &wait_head; (w = *pp); pp = &w->next) {
        if (w->page != page)
            continue;
        *pp = w->next;
        if (wait_tail == &w->next)
            wait_tail = pp;
        home_start(w->page, w->origin, w->mode);
        free(w);
        return;
    }
}

/* The fault being served is done: record who holds the page now and
 * serve the next one waiting for it. */
static void home_complete(uint64_t page, int mode, int origin)
{
    struct dir *d = dir_of(page);
    if (mode == MODE_READ) {
        d->copyset |= 1ULL << origin;
    } else {
        d->owner = (uint16_t)origin;
        d->copyset = 0;
    }
    d->busy = 0;
    home_next(page);
}

static void on_update(const struct msg *m)
{
    home_complete(m->page, m->mode, m->origin);
}

static void on_inv_ack(const struct msg *m)
{
    struct dir *d = dir_of(m->page);
    if (d->acks && --d->acks == 0)
        write_proceed(d, m->page);
}

/* Make batched work take effect, except that on messages of `type` (which
 * may keep batching): every other message must see it done. */
void coh_flush(int type)
{
    if (type != DSM_PAGE)
        flush_installs();
    if (type != DSM_FWD)
        flush_serves();
}

/* Run one protocol message (comm thread). */
void coh_dispatch(const struct msg *m, const unsigned char *payload)
{
    if (m->page >= st.npages) {
        comm_fail("protocol error: %s from rank %d names page %llu of %llu",
                  msg_name(m->type), m->from, (unsigned long long)m->page,
                  (unsigned long long)st.npages);
        return;
    }
    TRACE("%s page %llu mode %d origin %d from %d", msg_name(m->type),
          (unsigned long long)m->page, m->mode, m->origin, m->from);
    switch (m->type) {
    case DSM_REQ: on_req(m); break;
    case DSM_FWD: on_fwd(m); break;
    case DSM_PAGE: on_page(m, payload); break;
    case DSM_UPDATE: on_update(m); break;
    case DSM_INV: on_inv(m); break;
    case DSM_INV_ACK: on_inv_ack(m); break;
    default:
        comm_fail("protocol error: unexpected %s from rank %d", msg_name(m->type), m->from);
    }
}
