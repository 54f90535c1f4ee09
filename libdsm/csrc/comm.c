/* The comm thread: one ppoll() loop over the peer sockets, the wake-up
 * eventfd and the connection to dsmexec.  It frames messages, keeps a
 * non-blocking outbox per peer (so two ranks sending to each other can never
 * both block), runs deferred work, dispatches to coherence.c and sync.c,
 * and closes the connections at finalize.  It never takes the GIL and
 * never runs Python. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define RX_CHUNK (256 * 1024)

struct buf {
    unsigned char *data;
    size_t off, len, cap;       /* live bytes are data[off, len) */
};

struct peer {
    int fd;
    int finalized;              /* its DSM_FINALIZE arrived */
    int eof;                    /* it closed its side */
    int shut;                   /* we closed ours */
    struct buf rx;
    pthread_mutex_t txmu;       /* tx: the comm thread and faulting threads send */
    struct buf tx;
};

struct deferred {
    uint64_t due;
    struct msg m;
    struct deferred *next;
};

static struct peer *peers;
static struct msg *selfq;
static size_t selfq_len, selfq_cap;
static struct deferred *deferred;  /* sorted by due */
static int self_finalized, stopping;

/* Make room for n more bytes at the end of b; 0 or -1 (out of memory). */
static int buf_reserve(struct buf *b, size_t n)
{
    if (b->off && b->len + n > b->cap) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : RX_CHUNK;
        unsigned char *d;
        while (cap < b->len + n)
            cap *= 2;
        if (!(d = realloc(b->data, cap)))
            return -1;
        b->data = d;
        b->cap = cap;
    }
    return 0;
}

static void buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n)) {
        comm_fail("out of memory buffering %zu bytes", n);
        return;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Record a failure once; every waiting thread wakes and reports it. */
void comm_fail(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&st.mu);
    if (!st.failed) {
        va_start(ap, fmt);
        vsnprintf(st.failure, sizeof st.failure, fmt, ap);
        va_end(ap);
        st.failed = 1;
        TRACE("failure: %s", st.failure);
    }
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
}

/* Queue a message to ourselves for the comm thread.  The caller holds
 * st.mu.  DSM_ESTATE if the ring is full (wait on st.cv and retry). */
int comm_post(const struct msg *m)
{
    uint64_t one = 1;
    if (st.ring_len == RING_CAP)
        return DSM_ESTATE;
    st.ring[(st.ring_head + st.ring_len++) % RING_CAP] = *m;
    if (write(st.evfd, &one, sizeof one) < 0 && errno != EAGAIN)
        return DSM_ESYS;
    return DSM_OK;
}

/* Send to a peer.  `now`: straight onto the socket when nothing is queued
 * before it (application threads, to save a hand-off).  Otherwise, and for
 * what did not fit, into the outbox, which the comm thread flushes at the
 * end of each round of events, so that a burst of pages leaves in a few
 * large writes.  Returns 1 if something is left in the outbox. */
static int peer_send(int dst, struct msg *m, const void *payload, uint32_t len, int now)
{
    unsigned char hdr[MSG_WIRE_SIZE];
    struct peer *p = &peers[dst];
    ssize_t n = 0;
    int queued;
    m->len = len;
    msg_encode(m, hdr);
    __atomic_fetch_add(&st.stats.msgs_sent, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&st.stats.pages_sent, m->type == DSM_PAGE && len, __ATOMIC_RELAXED);
    pthread_mutex_lock(&p->txmu);
    if (p->eof || p->shut) {
        pthread_mutex_unlock(&p->txmu);
        comm_fail("cannot send %s to rank %d: its connection is closed", msg_name(m->type), dst);
        return 0;
    }
    if (now && p->tx.off == p->tx.len &&
        (n = net_send_frame(p->fd, hdr, payload, m->len)) < 0) {
        pthread_mutex_unlock(&p->txmu);
        comm_fail("send %s to rank %d: %s", msg_name(m->type), dst, strerror(errno));
        return 0;
    }
    if ((size_t)n < MSG_WIRE_SIZE)
        buf_append(&p->tx, hdr + n, MSG_WIRE_SIZE - (size_t)n);
    n = (size_t)n > MSG_WIRE_SIZE ? n - MSG_WIRE_SIZE : 0;
    if (m->len > (size_t)n)
        buf_append(&p->tx, (const unsigned char *)payload + n, m->len - (size_t)n);
    queued = p->tx.off < p->tx.len;
    pthread_mutex_unlock(&p->txmu);
    return queued;
}

/* Send a message to a rank (ourselves included), from the comm thread.
 * The payload is copied or sent now, so the caller may change it after.
 * Messages to ourselves carry no payload. */
void comm_send(int dst, struct msg *m, const void *payload, uint32_t len)
{
    if (dst != st.rank) {
        peer_send(dst, m, payload, len, 0);
        return;
    }
    if (selfq_len == selfq_cap) {
        size_t cap = selfq_cap ? selfq_cap * 2 : 64;
        struct msg *q = realloc(selfq, cap * sizeof *q);
        if (!q) {
            comm_fail("out of memory queueing %s", msg_name(m->type));
            return;
        }
        selfq = q;
        selfq_cap = cap;
    }
    m->from = (uint16_t)st.rank;
    m->len = 0;
    selfq[selfq_len++] = *m;
}

/* Send from an application thread that does not hold st.mu: straight onto
 * the socket (saving a hand-off to the comm thread, which is woken only to
 * flush what did not fit), or through the ring for ourselves. */
int comm_send_app(int dst, struct msg *m, const void *payload, uint32_t len)
{
    uint64_t one = 1;
    int rc = DSM_OK;
    if (dst == st.rank) {
        pthread_mutex_lock(&st.mu);
        while ((rc = comm_post(m)) == DSM_ESTATE && !st.failed)
            pthread_cond_wait(&st.cv, &st.mu);
        pthread_mutex_unlock(&st.mu);
        return rc == DSM_ESTATE ? DSM_EPEER : rc;
    }
    if (peer_send(dst, m, payload, len, 1) && write(st.evfd, &one, sizeof one) < 0 &&
        errno != EAGAIN)
        comm_fail("write of the wake-up eventfd: %s", strerror(errno));
    return st.failed ? DSM_EPEER : DSM_OK;
}

/* Run a message again at `due` (the hold window). */
void comm_defer(const struct msg *m, uint64_t due)
{
    struct deferred *d = malloc(sizeof *d), **pp = &deferred;
    if (!d) {
        comm_fail("out of memory deferring %s", msg_name(m->type));
        return;
    }
    d->due = due;
    d->m = *m;
    while (*pp && (*pp)->due <= due)
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    st.stats.deferred++;
}

/* ---------------------------------------------------------- finalize */

static void finalize_begin(void)
{
    int r;
    for (r = 0; r < st.nranks; r++) {
        struct msg m = { .type = DSM_FINALIZE, .origin = (uint16_t)st.rank };
        if (r != st.rank)
            comm_send(r, &m, NULL, 0);
    }
    self_finalized = 1;
    sync_finalized(st.rank);
}

/* Once every rank said DSM_FINALIZE, flush, shut our side, and stop when
 * every peer has shut theirs: nothing anyone still needs is in flight. */
static void finalize_progress(void)
{
    int r, open = 0;
    if (!self_finalized)
        return;
    for (r = 0; r < st.nranks; r++)
        if (r != st.rank && !peers[r].finalized)
            return;
    for (r = 0; r < st.nranks; r++) {
        struct peer *p = &peers[r];
        if (r == st.rank)
            continue;
        pthread_mutex_lock(&p->txmu);
        if (!p->shut && p->tx.off == p->tx.len) {
            shutdown(p->fd, SHUT_WR);
            p->shut = 1;
        }
        pthread_mutex_unlock(&p->txmu);
        open += !p->shut || !p->eof;
    }
    stopping = !open;
}

/* ---------------------------------------------------------- the loop */

static void dispatch(const struct msg *m, const unsigned char *payload)
{
    coh_flush(m->type);     /* batched work on other messages takes effect first */
    switch (m->type) {
    case DSM_REQ: case DSM_FWD: case DSM_PAGE: case DSM_UPDATE: case DSM_INV:
    case DSM_INV_ACK:
        coh_dispatch(m, payload);
        break;
    case DSM_FINALIZE:
        if (m->from == st.rank) {
            finalize_begin();
        } else {
            peers[m->from].finalized = 1;
            sync_finalized(m->from);
        }
        break;
    default:
        sync_dispatch(m, payload);
    }
}

/* Dispatch the messages to ourselves; how many there were. */
static size_t drain_self(void)
{
    size_t i;
    for (i = 0; i < selfq_len; i++) {
        struct msg m = selfq[i];    /* dispatch may grow selfq */
        dispatch(&m, NULL);
    }
    selfq_len = 0;
    return i;
}

/* End of a round of events: make batched work take effect and handle what
 * it sent to ourselves, until nothing is left. */
static void settle(void)
{
    do
        coh_flush(0);
    while (drain_self());
}

/* Take the messages application threads posted to us. */
static void drain_ring(void)
{
    struct msg batch[RING_CAP];
    unsigned i, n;
    uint64_t v;
    if (read(st.evfd, &v, sizeof v) < 0 && errno != EAGAIN)
        comm_fail("read of the wake-up eventfd: %s", strerror(errno));
    pthread_mutex_lock(&st.mu);
    n = st.ring_len;
    for (i = 0; i < n; i++)
        batch[i] = st.ring[(st.ring_head + i) % RING_CAP];
    st.ring_head = (st.ring_head + n) % RING_CAP;
    st.ring_len = 0;
    if (n == RING_CAP)
        pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
    for (i = 0; i < n; i++) {
        batch[i].from = (uint16_t)st.rank;
        dispatch(&batch[i], NULL);
        drain_self();
    }
}

/* Payload bytes a message of this type may carry. */
static int valid_len(const struct msg *m)
{
    switch (m->type) {
    case DSM_PAGE: return m->len == 0 || m->len == st.page_size;
    case DSM_BARRIER_GO: return m->len < DSM_ERRLEN;
    case DSM_BCAST: return m->len <= DSM_MAX_BCAST;
    default: return m->len == 0;
    }
}

/* Parse every complete message in a peer's receive buffer. */
static void parse(int r, struct peer *p)
{
    struct msg m;
    while (p->rx.len - p->rx.off >= MSG_WIRE_SIZE) {
        unsigned char *h = p->rx.data + p->rx.off;
        msg_decode(h, &m);
        m.from = (uint16_t)r;
        if (m.type == 0 || m.type >= DSM_MSG_MAX || !valid_len(&m) || m.origin >= st.nranks) {
            comm_fail("protocol error from rank %d: type %d, %u payload bytes", r, m.type,
                      m.len);
            p->rx.off = p->rx.len;
            return;
        }
        if (p->rx.len - p->rx.off < MSG_WIRE_SIZE + m.len)
            return;
        p->rx.off += MSG_WIRE_SIZE + m.len;
        st.stats.msgs_recv++;
        dispatch(&m, m.len ? h + MSG_WIRE_SIZE : NULL);
        drain_self();
    }
}

static void on_readable(int r, struct peer *p)
{
    for (;;) {
        ssize_t n;
        if (buf_reserve(&p->rx, RX_CHUNK)) {
            comm_fail("out of memory receiving from rank %d", r);
            return;
        }
        n = recv(p->fd, p->rx.data + p->rx.len, p->rx.cap - p->rx.len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            p->eof = 1;
            if (!p->finalized)
                comm_fail("rank %d closed its connection before finalize (%s)", r,
                          n < 0 ? strerror(errno) : "end of stream");
            break;
        }
        p->rx.len += (size_t)n;
        parse(r, p);
    }
    if (p->rx.off == p->rx.len)
        p->rx.off = p->rx.len = 0;
}

/* Write as much of a peer's outbox as the socket takes. */
static void flush_peer(int r, struct peer *p)
{
    ssize_t n;
    pthread_mutex_lock(&p->txmu);
    if (p->tx.off == p->tx.len || p->shut) {
        pthread_mutex_unlock(&p->txmu);
        return;
    }
    do {
        n = send(p->fd, p->tx.data + p->tx.off, p->tx.len - p->tx.off,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        comm_fail("send to rank %d: %s", r, strerror(errno));
        p->tx.off = p->tx.len;
    } else if (n > 0) {
        p->tx.off += (size_t)n;
    }
    if (p->tx.off == p->tx.len)
        p->tx.off = p->tx.len = 0;
    pthread_mutex_unlock(&p->txmu);
}

static void run_deferred(void)
{
    uint64_t now = now_ns();
    while (deferred && deferred->due <= now) {
        struct deferred *d = deferred;
        deferred = d->next;
        dispatch(&d->m, NULL);
        free(d);
        drain_self();
    }
}

/* ppoll timeout until the next deferred message, NULL for none, or zero
 * (after yielding the CPU) while a waiting thread asks for busy polling. */
static struct timespec *poll_timeout(struct timespec *ts)
{
    uint64_t now, wait;
    if (__atomic_load_n(&st.busy_poll, __ATOMIC_RELAXED) > 0) {
        sched_yield();
        *ts = (struct timespec){ 0, 0 };
        return ts;
    }
    if (!deferred)
        return NULL;
    now = now_ns();
    wait = deferred->due > now ? deferred->due - now : 0;
    ts->tv_sec = (time_t)(wait / 1000000000ULL);
    ts->tv_nsec = (long)(wait % 1000000000ULL);
    return ts;
}

static void *comm_main(void *arg)
{
    struct pollfd *fds = arg;
    struct timespec ts;
    int r, n = st.nranks;
    while (!stopping) {
        for (r = 0; r < n; r++) {
            struct peer *p = &peers[r];
            fds[2 + r].fd = r == st.rank || p->eof ? -1 : p->fd;
            pthread_mutex_lock(&p->txmu);
            fds[2 + r].events = (short)(POLLIN | (p->tx.off < p->tx.len ? POLLOUT : 0));
            pthread_mutex_unlock(&p->txmu);
        }
        if (ppoll(fds, (nfds_t)(2 + n), poll_timeout(&ts), NULL) < 0 && errno != EINTR)
            comm_fail("ppoll: %s", strerror(errno));
        if (fds[1].revents)
            dsm_panic("lost the connection to dsmexec, exiting");
        if (fds[0].revents & POLLIN)
            drain_ring();
        for (r = 0; r < n; r++) {
            short ev = fds[2 + r].fd < 0 ? 0 : fds[2 + r].revents;
            if (ev & (POLLIN | POLLHUP | POLLERR))
                on_readable(r, &peers[r]);
        }
        run_deferred();
        settle();
        for (r = 0; r < n; r++)
            if (r != st.rank)
                flush_peer(r, &peers[r]);
        finalize_progress();
    }
    for (r = 0; r < n; r++)
        if (r != st.rank)
            close(peers[r].fd);
    pthread_mutex_lock(&st.mu);
    st.phase = PHASE_FINISHED;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
    free(fds);
    return NULL;
}

/* Take over the peer sockets and start the thread, with every signal
 * blocked in it so that signals go to the application's threads. */
int comm_start(const int *peer_fds, char *err)
{
    struct pollfd *fds = calloc((size_t)st.nranks + 2, sizeof *fds);
    sigset_t all, old;
    int r, rc;
    peers = calloc((size_t)st.nranks, sizeof *peers);
    if (!fds || !peers) {
        dsm_err(err, "comm thread state: out of memory");
        return DSM_ESYS;
    }
    for (r = 0; r < st.nranks; r++) {
        peers[r].fd = r == st.rank ? -1 : peer_fds[r];
        pthread_mutex_init(&peers[r].txmu, NULL);
        if (r != st.rank && (rc = net_prepare(peers[r].fd, err)))
            return rc;
    }
    fds[0] = (struct pollfd){ .fd = st.evfd, .events = POLLIN };
    fds[1] = (struct pollfd){ .fd = st.master_fd, .events = POLLRDHUP };
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&st.thread, NULL, comm_main, fds);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        dsm_err(err, "pthread_create: %s", strerror(rc));
        return DSM_ESYS;
    }
    return DSM_OK;
}
