/* Layer 1: the socket backend of the transport.  One comm thread runs a
 * ppoll() loop over the peer sockets, the wake-up eventfd and the
 * connection to dsmexec.  It frames messages, keeps a non-blocking outbox
 * per peer (so two ranks sending to each other can never both block), runs
 * deferred messages, delivers through transport.c, and closes the
 * connections at finalize.  It never takes the GIL and never runs Python.
 *
 * Liveness is the comm thread's too, so a rank whose Python is busy in a
 * GIL-holding call for minutes is still alive: every heartbeat_ns / 4 it
 * sends DSM_HEARTBEAT to each peer it has sent nothing to for that long,
 * and it declares dead a peer from which no byte came for heartbeat_ns.
 * After any failure it gives the program FENCE_NS to end, then ends the
 * process itself (self-fencing: a wedged link closes no TCP connection). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "comm.h"
#include "net.h"

#define RX_CHUNK (256 * 1024)
#define FENCE_NS 2000000000ULL  /* after a failure, the program's time to end */

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
    uint64_t last_rx_ns;        /* when a byte last came (comm thread) */
    uint64_t last_tx_ns;        /* when something was last sent (under txmu) */
};

struct deferred {
    uint64_t due;
    struct msg m;
    struct deferred *next;
};

/* The backend's state; only the comm thread touches it, except peers[].tx
 * (under txmu) and evfd. */
struct comm {
    struct transport *t;
    struct core *c;
    struct peer *peers;
    struct pollfd *fds;         /* evfd, master, then one per rank */
    struct deferred *deferred;  /* sorted by due */
    int evfd, master_fd;
    int self_finalized, stopping;
    pthread_t thread;
    uint64_t next_tick_ns;      /* next round of heartbeats */
    uint64_t next_duty_ns;      /* next heartbeat or silence check; 0: heartbeats off */
    uint64_t fence_ns;          /* when to end the process after a failure; 0: none */
};

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

static void buf_append(struct comm *cm, struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n)) {
        core_fail(cm->c, "out of memory buffering %zu bytes", n);
        return;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void wake(struct comm *cm)
{
    uint64_t one = 1;
    if (write(cm->evfd, &one, sizeof one) < 0 && errno != EAGAIN)
        core_fail(cm->c, "write of the wake-up eventfd: %s", strerror(errno));
}

/* Send to a peer.  `now`: straight onto the socket when nothing is queued
 * before it (application threads, to save a hand-off).  Otherwise, and for
 * what did not fit, into the outbox, which the comm thread flushes at the
 * end of each round of events, so that a burst of pages leaves in a few
 * large writes.  Returns 1 if something is left in the outbox. */
static int peer_send(struct comm *cm, int dst, const struct msg *m, const void *payload,
                     int now)
{
    unsigned char hdr[MSG_WIRE_SIZE];
    struct peer *p = &cm->peers[dst];
    ssize_t n = 0;
    int queued;
    msg_encode(m, hdr);
    __atomic_fetch_add(&cm->c->stats.msgs_sent, m->type != DSM_HEARTBEAT, __ATOMIC_RELAXED);
    __atomic_fetch_add(&cm->c->stats.pages_sent, m->type == DSM_PAGE && m->len,
                       __ATOMIC_RELAXED);
    pthread_mutex_lock(&p->txmu);
    if (p->eof || p->shut) {
        pthread_mutex_unlock(&p->txmu);
        core_fail(cm->c, "cannot send %s to rank %d: its connection is closed",
                  msg_name(m->type), dst);
        return 0;
    }
    if (now && p->tx.off == p->tx.len &&
        (n = net_send_frame(p->fd, hdr, payload, m->len)) < 0) {
        pthread_mutex_unlock(&p->txmu);
        core_fail(cm->c, "send %s to rank %d: %s", msg_name(m->type), dst, strerror(errno));
        return 0;
    }
    if ((size_t)n < MSG_WIRE_SIZE)
        buf_append(cm, &p->tx, hdr + n, MSG_WIRE_SIZE - (size_t)n);
    n = (size_t)n > MSG_WIRE_SIZE ? n - MSG_WIRE_SIZE : 0;
    if (m->len > (size_t)n)
        buf_append(cm, &p->tx, (const unsigned char *)payload + n, m->len - (size_t)n);
    queued = p->tx.off < p->tx.len;
    if (cm->c->heartbeat_ns)
        p->last_tx_ns = now_ns();
    pthread_mutex_unlock(&p->txmu);
    return queued;
}

/* ---------------------------------------------------------- transport ops */

static void op_send(struct transport *t, int dst, const struct msg *m, const void *payload)
{
    peer_send(t->backend, dst, m, payload, 0);
}

/* Straight onto the socket (saving a hand-off to the comm thread, which is
 * woken only to flush what did not fit). */
static void op_send_app(struct transport *t, int dst, const struct msg *m, const void *payload)
{
    if (peer_send(t->backend, dst, m, payload, 1))
        wake(t->backend);
}

static void op_wake(struct transport *t)
{
    wake(t->backend);
}

static void op_defer(struct transport *t, const struct msg *m, uint64_t due)
{
    struct comm *cm = t->backend;
    struct deferred *d = malloc(sizeof *d), **pp = &cm->deferred;
    if (!d) {
        core_fail(cm->c, "out of memory deferring %s", msg_name(m->type));
        return;
    }
    d->due = due;
    d->m = *m;
    while (*pp && (*pp)->due <= due)
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    cm->c->stats.deferred++;
}

static const struct transport_ops socket_ops = { op_send, op_send_app, op_wake, op_defer };

/* ---------------------------------------------------------- finalize */

/* DSM_FINALIZE: from ourselves (posted by dsm_finalize) tell every peer;
 * from a peer, note it. */
static void on_finalize(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct comm *cm = ctx;
    int r;
    if (m->from == cm->c->rank) {
        for (r = 0; r < cm->c->nranks; r++) {
            struct msg f = *m;
            if (r != cm->c->rank)
                tp_send(cm->t, r, &f, NULL);
        }
        cm->self_finalized = 1;
    } else {
        cm->peers[m->from].finalized = 1;
    }
    tp_finalized(cm->t, m);
}

/* Once every rank said DSM_FINALIZE, flush, shut our side, and stop when
 * every peer has shut theirs: nothing anyone still needs is in flight. */
static void finalize_progress(struct comm *cm)
{
    int r, open = 0;
    if (!cm->self_finalized)
        return;
    for (r = 0; r < cm->c->nranks; r++)
        if (r != cm->c->rank && !cm->peers[r].finalized)
            return;
    for (r = 0; r < cm->c->nranks; r++) {
        struct peer *p = &cm->peers[r];
        if (r == cm->c->rank)
            continue;
        pthread_mutex_lock(&p->txmu);
        if (!p->shut && p->tx.off == p->tx.len) {
            shutdown(p->fd, SHUT_WR);
            p->shut = 1;
        }
        pthread_mutex_unlock(&p->txmu);
        open += !p->shut || !p->eof;
    }
    cm->stopping = !open;
}

/* ---------------------------------------------------------- the loop */

/* Deliver every complete message in a peer's receive buffer. */
static void parse(struct comm *cm, int r, struct peer *p)
{
    struct msg m;
    while (p->rx.len - p->rx.off >= MSG_WIRE_SIZE) {
        unsigned char *h = p->rx.data + p->rx.off;
        msg_decode(h, &m);
        m.from = (uint16_t)r;
        if (tp_check(cm->t, &m)) {
            p->rx.off = p->rx.len;
            return;
        }
        if (p->rx.len - p->rx.off < MSG_WIRE_SIZE + m.len)
            return;
        p->rx.off += MSG_WIRE_SIZE + m.len;
        cm->c->stats.msgs_recv += m.type != DSM_HEARTBEAT;
        tp_deliver(cm->t, &m, m.len ? h + MSG_WIRE_SIZE : NULL);
    }
}

static void on_readable(struct comm *cm, int r, struct peer *p)
{
    for (;;) {
        ssize_t n;
        if (buf_reserve(&p->rx, RX_CHUNK)) {
            core_fail(cm->c, "out of memory receiving from rank %d", r);
            return;
        }
        n = recv(p->fd, p->rx.data + p->rx.len, p->rx.cap - p->rx.len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {           /* a peer closes only once every rank, we too, finalized */
            p->eof = 1;
            if (!p->finalized || !cm->self_finalized)
                core_fail(cm->c, "rank %d closed its connection before finalize (%s)", r,
                          n < 0 ? strerror(errno) : "end of stream");
            break;
        }
        p->rx.len += (size_t)n;
        p->last_rx_ns = cm->c->heartbeat_ns ? now_ns() : 0;
        parse(cm, r, p);
    }
    if (p->rx.off == p->rx.len)
        p->rx.off = p->rx.len = 0;
}

/* Write as much of a peer's outbox as the socket takes. */
static void flush_peer(struct comm *cm, int r, struct peer *p)
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
        core_fail(cm->c, "send to rank %d: %s", r, strerror(errno));
        p->tx.off = p->tx.len;
    } else if (n > 0) {
        p->tx.off += (size_t)n;
    }
    if (p->tx.off == p->tx.len)
        p->tx.off = p->tx.len = 0;
    pthread_mutex_unlock(&p->txmu);
}

static void run_deferred(struct comm *cm)
{
    uint64_t now = now_ns();
    while (cm->deferred && cm->deferred->due <= now) {
        struct deferred *d = cm->deferred;
        cm->deferred = d->next;
        tp_deliver(cm->t, &d->m, NULL);
        free(d);
    }
}

/* ppoll timeout until the next deferred message, heartbeat round or fence,
 * NULL for none, or zero (after yielding the CPU) while a waiting thread
 * asks for busy polling. */
static struct timespec *poll_timeout(struct comm *cm, struct timespec *ts)
{
    uint64_t now, wait, due = UINT64_MAX;
    if (__atomic_load_n(&cm->c->busy_poll, __ATOMIC_RELAXED) > 0) {
        sched_yield();
        *ts = (struct timespec){ 0, 0 };
        return ts;
    }
    if (cm->deferred)
        due = cm->deferred->due;
    if (cm->next_duty_ns && cm->next_duty_ns < due)
        due = cm->next_duty_ns;
    if (cm->fence_ns && cm->fence_ns < due)
        due = cm->fence_ns;
    if (due == UINT64_MAX)
        return NULL;
    now = now_ns();
    wait = due > now ? due - now : 0;
    ts->tv_sec = (time_t)(wait / 1000000000ULL);
    ts->tv_nsec = (long)(wait % 1000000000ULL);
    return ts;
}

/* ---------------------------------------------------------- liveness */

/* DSM_HEARTBEAT: its bytes arriving were the point; nothing to do. */
static void on_heartbeat(void *ctx, const struct msg *m, const unsigned char *payload)
{
}

/* Each round: a peer silent for heartbeat_ns is declared dead.  Every
 * heartbeat_ns / 4: a heartbeat to each peer we have been silent to for
 * that long.  Peers that closed, or that we closed, need neither.  The
 * poll wakes at the next tick or the first peer's silence deadline. */
static void heartbeat_duty(struct comm *cm, uint64_t now)
{
    const struct core *c = cm->c;
    uint64_t tick = c->heartbeat_ns / 4;
    struct msg hb = { .type = DSM_HEARTBEAT, .origin = (uint16_t)c->rank };
    int r, idle, send = now >= cm->next_tick_ns;
    if (!c->heartbeat_ns)
        return;
    if (send)
        cm->next_tick_ns = now + tick;
    cm->next_duty_ns = cm->next_tick_ns;
    for (r = 0; r < c->nranks; r++) {
        struct peer *p = &cm->peers[r];
        if (r == c->rank || p->eof)
            continue;
        if (now - p->last_rx_ns >= c->heartbeat_ns)
            core_fail(cm->c, "rank %d sent nothing for %.1f s: declared dead", r,
                      (double)(now - p->last_rx_ns) / 1e9);
        else if (p->last_rx_ns + c->heartbeat_ns < cm->next_duty_ns)
            cm->next_duty_ns = p->last_rx_ns + c->heartbeat_ns;
        if (!send)
            continue;
        pthread_mutex_lock(&p->txmu);
        idle = !p->shut && now - p->last_tx_ns >= tick;
        pthread_mutex_unlock(&p->txmu);
        if (idle)
            peer_send(cm, r, &hb, NULL, 0);
    }
}

/* Self-fencing: once the job failed, the program has FENCE_NS to end
 * (a PeerError normally does it); a rank stuck elsewhere ends here. */
static void fence(struct comm *cm, uint64_t now)
{
    struct core *c = cm->c;
    char why[DSM_ERRLEN];
    if (!c->heartbeat_ns || !__atomic_load_n(&c->failed, __ATOMIC_RELAXED))
        return;
    if (!cm->fence_ns) {
        cm->fence_ns = now + FENCE_NS;
        return;
    }
    if (now < cm->fence_ns)
        return;
    pthread_mutex_lock(&c->mu);
    memcpy(why, c->failure, sizeof why);
    pthread_mutex_unlock(&c->mu);
    dsm_panic(c->rank, "%s; the program did not end within %llu s of it, exiting", why,
              FENCE_NS / 1000000000ULL);
}

/* One round: wait for events, deliver what came, settle, flush outboxes. */
static void round_of_events(struct comm *cm)
{
    struct pollfd *fds = cm->fds;
    struct timespec ts;
    int r, n = cm->c->nranks;
    for (r = 0; r < n; r++) {
        struct peer *p = &cm->peers[r];
        fds[2 + r].fd = r == cm->c->rank || p->eof ? -1 : p->fd;
        pthread_mutex_lock(&p->txmu);
        fds[2 + r].events = (short)(POLLIN | (p->tx.off < p->tx.len ? POLLOUT : 0));
        pthread_mutex_unlock(&p->txmu);
    }
    if (ppoll(fds, (nfds_t)(2 + n), poll_timeout(cm, &ts), NULL) < 0 && errno != EINTR)
        core_fail(cm->c, "ppoll: %s", strerror(errno));
    if (fds[1].revents)
        dsm_panic(cm->c->rank, "lost the connection to dsmexec, exiting");
    if (fds[0].revents & POLLIN) {
        uint64_t v;
        if (read(cm->evfd, &v, sizeof v) < 0 && errno != EAGAIN)
            core_fail(cm->c, "read of the wake-up eventfd: %s", strerror(errno));
        tp_drain_ring(cm->t);
    }
    for (r = 0; r < n; r++) {
        short ev = fds[2 + r].fd < 0 ? 0 : fds[2 + r].revents;
        if (ev & (POLLIN | POLLHUP | POLLERR))
            on_readable(cm, r, &cm->peers[r]);
    }
    run_deferred(cm);
    heartbeat_duty(cm, now_ns());
    tp_settle(cm->t);
    for (r = 0; r < n; r++)
        if (r != cm->c->rank)
            flush_peer(cm, r, &cm->peers[r]);
    finalize_progress(cm);
    fence(cm, now_ns());
}

static void *comm_main(void *arg)
{
    struct comm *cm = arg;
    int r;
    while (!cm->stopping)
        round_of_events(cm);
    for (r = 0; r < cm->c->nranks; r++)
        if (r != cm->c->rank)
            close(cm->peers[r].fd);
    pthread_mutex_lock(&cm->c->mu);
    cm->c->phase = PHASE_FINISHED;
    pthread_cond_broadcast(&cm->c->cv);
    pthread_mutex_unlock(&cm->c->mu);
    return NULL;
}

/* ---------------------------------------------------------- life cycle */

int comm_open(struct transport *t, struct core *c, const int *peer_fds, int master_fd,
              char *err)
{
    struct comm *cm = calloc(1, sizeof *cm);
    int r, rc = DSM_ESYS;
    if (cm)
        cm->evfd = -1;
    if (!cm || !(cm->peers = calloc((size_t)c->nranks, sizeof *cm->peers)) ||
        !(cm->fds = calloc((size_t)c->nranks + 2, sizeof *cm->fds))) {
        dsm_err_sys(err, ENOMEM, "comm thread state");
        goto err;
    }
    cm->t = t;
    cm->c = c;
    cm->master_fd = master_fd;
    cm->next_tick_ns = cm->next_duty_ns = c->heartbeat_ns ? now_ns() + c->heartbeat_ns / 4 : 0;
    if ((cm->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        rc = dsm_err_sys(err, errno, "eventfd");
        goto err;
    }
    for (r = 0; r < c->nranks; r++) {
        cm->peers[r].fd = r == c->rank ? -1 : peer_fds[r];
        cm->peers[r].last_rx_ns = cm->peers[r].last_tx_ns = now_ns();
        pthread_mutex_init(&cm->peers[r].txmu, NULL);
        if (r != c->rank && (rc = net_prepare(cm->peers[r].fd, err)))
            goto err;
    }
    cm->fds[0] = (struct pollfd){ .fd = cm->evfd, .events = POLLIN };
    cm->fds[1] = (struct pollfd){ .fd = master_fd, .events = POLLRDHUP };
    tp_init(t, c, &socket_ops, cm);
    tp_register(t, DSM_FINALIZE, on_finalize, cm, 0);
    tp_register(t, DSM_HEARTBEAT, on_heartbeat, cm, 0);
    return DSM_OK;
err:
    if (cm) {
        if (cm->evfd >= 0)
            close(cm->evfd);
        free(cm->peers);
        free(cm->fds);
        free(cm);
    }
    return rc;
}

int comm_run(struct transport *t, char *err)
{
    struct comm *cm = t->backend;
    sigset_t all, old;
    int rc;
    /* every signal blocked in the thread, so signals go to the application's */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&cm->thread, NULL, comm_main, cm);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc ? dsm_err_sys(err, rc, "pthread_create") : DSM_OK;
}

void comm_join(struct transport *t)
{
    pthread_join(((struct comm *)t->backend)->thread, NULL);
}

void comm_close(struct transport *t)
{
    struct comm *cm = t->backend;
    int r;
    if (!cm)
        return;
    while (cm->deferred) {
        struct deferred *d = cm->deferred;
        cm->deferred = d->next;
        free(d);
    }
    for (r = 0; r < cm->c->nranks; r++) {
        free(cm->peers[r].rx.data);
        free(cm->peers[r].tx.data);
        pthread_mutex_destroy(&cm->peers[r].txmu);
    }
    close(cm->evfd);
    free(cm->peers);
    free(cm->fds);
    free(cm);
    tp_free(t);
    t->backend = NULL;
}
