/* Layer 1: the socket backend of the transport.  One comm thread runs a
 * ppoll() loop over the peer sockets, the wake-up eventfd and the
 * connection to dsmexec.  It frames messages, keeps a non-blocking outbox
 * per peer (so two ranks sending to each other can never both block), runs
 * deferred messages, delivers through transport.c (or passes a message
 * for another rank on, as a host leader: route.h), and closes the
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
#include "commstep.h"
#include "net.h"
#include "peer.h"

struct deferred {
    uint64_t due;
    struct msg m;
    struct deferred *next;
};

/* The backend's state.  Whoever holds loop_mu runs the handlers and owns
 * the rest: the comm thread, or an application thread waiting for a reply
 * (app_poll); peers[].tx is under txmu, and evfd anyone's. */
struct comm {
    pthread_mutex_t loop_mu;
    struct lead lead;           /* who polls the peers in DSM_WAIT=reply (commstep.h) */
    uint64_t awake_until;       /* the comm thread polls without sleeping until then */
    struct transport *t;
    struct core *c;
    struct peer *peers;         /* by rank; those not in `direct` have no connection */
    struct route route;         /* the connection structure (route.h) */
    struct relay relay;         /* passing messages on (peer.h) */
    int *direct, ndirect;       /* the ranks this rank holds a connection to */
    struct pollfd *fds;         /* evfd, master, then one per direct peer */
    struct pollfd *app_fds;     /* app_poll's, one per direct peer (under loop_mu) */
    struct deferred *deferred;  /* sorted by due */
    int evfd;
    struct loss_report report;  /* the LOST_PEER message to dsmexec (peer.h) */
    int self_finalized, stopping;
    pthread_t thread;
    struct liveness live;       /* heartbeats and fencing (commstep.h) */
};

static void wake(struct comm *cm)
{
    uint64_t one = 1;
    if (write(cm->evfd, &one, sizeof one) < 0 && errno != EAGAIN)
        core_fail(cm->c, "write of the wake-up eventfd: %s", strerror(errno));
}

/* ---------------------------------------------------------- transport ops */

static void op_send(struct transport *t, int dst, const struct msg *m, const void *payload)
{
    struct comm *cm = t->backend;
    peer_send(&cm->peers[route_next(&cm->route, dst)], dst, m, payload, 0);
}

/* Straight onto the socket (saving a hand-off to the comm thread, which is
 * woken only to flush what did not fit). */
static void op_send_app(struct transport *t, int dst, const struct msg *m, const void *payload)
{
    struct comm *cm = t->backend;
    if (peer_send(&cm->peers[route_next(&cm->route, dst)], dst, m, payload, 1))
        wake(cm);
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

/* DSM_FINALIZE: from ourselves (posted by dsm_finalize) tell every rank
 * (through the leaders where there is no connection); from a rank, note it. */
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

/* The connections as finalize's progress (live_finish) sees them. */
static int fin_finalized(void *ctx, int r)
{
    return ((struct comm *)ctx)->peers[r].finalized;
}

static int fin_shut(void *ctx, int r)
{
    struct peer *p = &((struct comm *)ctx)->peers[r];
    int shut;
    mu_lock(&p->txmu, LK_TX);
    if (!p->shut && p->tx.off == p->tx.len) {
        shutdown(p->fd, SHUT_WR);
        p->shut = 1;
    }
    shut = p->shut;
    mu_unlock(&p->txmu, LK_TX);
    return shut;
}

static int fin_eof(void *ctx, int r)
{
    return ((struct comm *)ctx)->peers[r].eof;
}

static const struct finish_io finish_io = { fin_finalized, fin_shut, fin_eof };

/* ---------------------------------------------------------- the loop */

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
 * NULL for none; at most HANDBACK_NS while `leader`: an application thread
 * polls the peers, and the comm thread takes them back soon after it
 * stops.  Zero (after yielding the CPU) while a waiting thread asks for
 * busy polling, or, when every thread has a core (core.poll set), for
 * spin_ns after a message came: the next request of a burst then finds
 * the comm thread awake. */
static struct timespec *poll_timeout(struct comm *cm, struct timespec *ts, int leader)
{
    uint64_t now = now_ns(), wait;
    if (__atomic_load_n(&cm->c->busy_poll, __ATOMIC_RELAXED) > 0 ||
        (!leader && cm->c->poll && now < cm->awake_until)) {
        sched_yield();
        *ts = (struct timespec){ 0, 0 };
        return ts;
    }
    wait = live_wait_ns(&cm->live, now, cm->deferred ? cm->deferred->due : UINT64_MAX, leader);
    if (wait == UINT64_MAX)
        return NULL;
    ts->tv_sec = (time_t)(wait / 1000000000ULL);
    ts->tv_nsec = (long)(wait % 1000000000ULL);
    return ts;
}

/* ---------------------------------------------------------- liveness */

/* DSM_HEARTBEAT: its bytes arriving were the point; nothing to do. */
static void on_heartbeat(void *ctx, const struct msg *m, const unsigned char *payload)
{
}

/* DSM_LOST: a leader lost a rank this one reaches through it (peer.h). */
static void on_lost(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct comm *cm = ctx;
    peer_lost_heard(&cm->peers[m->from], m, payload);
}

/* The peers as the heartbeat duty (live_duty, commstep.h) sees them. */
static int hb_closed(void *ctx, int r)
{
    return ((struct comm *)ctx)->peers[r].eof;
}

static uint64_t hb_last_rx(void *ctx, int r)
{
    return ((struct comm *)ctx)->peers[r].last_rx_ns;
}

static int hb_last_tx(void *ctx, int r, uint64_t *at)
{
    struct peer *p = &((struct comm *)ctx)->peers[r];
    int open;
    mu_lock(&p->txmu, LK_TX);
    open = !p->shut;
    *at = p->last_tx_ns;
    mu_unlock(&p->txmu, LK_TX);
    return open;
}

static void hb_lost(void *ctx, int r, uint64_t silent_ns)
{
    peer_lost(&((struct comm *)ctx)->peers[r], "silent",
              "rank %d sent nothing for %.1f s: declared dead", r, (double)silent_ns / 1e9);
}

static void hb_beat(void *ctx, int r)
{
    struct comm *cm = ctx;
    struct msg hb = { .type = DSM_HEARTBEAT, .origin = (uint16_t)cm->c->rank };
    peer_send(&cm->peers[r], r, &hb, NULL, 0);
}

/* Self-fencing: once the job failed, the program has FENCE_NS to end
 * (a PeerError normally does it); a rank stuck elsewhere ends here. */
static void fence(struct comm *cm, uint64_t now)
{
    struct core *c = cm->c;
    char why[DSM_ERRLEN];
    if (!live_fence(&cm->live, now, core_failed(c)))
        return;
    memcpy(why, c->failure, sizeof why);    /* fixed once core_failed says so */
    dsm_panic(c->rank, "%s; the program did not end within %llu s of it, exiting", why,
              FENCE_NS / 1000000000ULL);
}

/* Receive from the direct peers whose fds[i] polled readable, deliver,
 * and settle (caller holds loop_mu). */
static void peers_receive(struct comm *cm, const struct pollfd *fds)
{
    int i;
    for (i = 0; i < cm->ndirect; i++)
        if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
            peer_read(&cm->peers[cm->direct[i]], cm->self_finalized);
    tp_settle(cm->t);
}

/* Write what the outboxes hold (caller holds loop_mu). */
static void peers_flush(struct comm *cm)
{
    int i;
    for (i = 0; i < cm->ndirect; i++)
        peer_flush(&cm->peers[cm->direct[i]]);
}

/* The direct peers to poll into fds[0, ndirect), for reading: every open
 * one, none (fd -1) while an application thread polls them (`leader`).
 * The comm thread's own poll (`outbox`) also waits to write where an
 * outbox holds something.  Caller holds loop_mu. */
static void peer_fds(struct comm *cm, struct pollfd *fds, int leader, int outbox)
{
    int i;
    for (i = 0; i < cm->ndirect; i++) {
        struct peer *p = &cm->peers[cm->direct[i]];
        fds[i] = (struct pollfd){ .fd = p->eof || leader ? -1 : p->fd, .events = POLLIN };
        if (!outbox)
            continue;
        mu_lock(&p->txmu, LK_TX);
        fds[i].events |= (short)(p->tx.off < p->tx.len ? POLLOUT : 0);
        mu_unlock(&p->txmu, LK_TX);
    }
}

/* What came from every open peer, polled now: the heartbeat duty's look
 * before a verdict in a round that left the peers to a polling thread. */
static void hb_receive(void *ctx)
{
    struct comm *cm = ctx;
    struct timespec zero = { 0, 0 };
    peer_fds(cm, cm->fds + 2, 0, 0);
    if (ppoll(cm->fds + 2, (nfds_t)cm->ndirect, &zero, NULL) > 0)
        peers_receive(cm, cm->fds + 2);
}

static const struct live_io heartbeat_io = { hb_closed, hb_last_rx, hb_last_tx, hb_lost,
                                             hb_beat, hb_receive };

/* One round: wait for events, deliver what came, settle, flush outboxes.
 * The wait is outside loop_mu, so that a waiting application thread can
 * receive its reply meanwhile (app_poll); while one does, the comm thread
 * leaves the peer sockets to it, so that a reply wakes one thread only. */
static void round_of_events(struct comm *cm)
{
    struct pollfd *fds = cm->fds;
    struct timespec ts;
    uint64_t received;
    int leader;
    mu_lock(&cm->loop_mu, LK_LOOP);
    leader = !lead_watch(&cm->lead);
    peer_fds(cm, fds + 2, leader, 1);
    mu_unlock(&cm->loop_mu, LK_LOOP);
    if (ppoll(fds, (nfds_t)(2 + cm->ndirect), poll_timeout(cm, &ts, leader), NULL) < 0 &&
        errno != EINTR)
        core_fail(cm->c, "ppoll: %s", strerror(errno));
    lead_unwatch(&cm->lead);
    if (fds[1].revents)
        dsm_panic(cm->c->rank, "lost the connection to dsmexec, exiting");
    mu_lock(&cm->loop_mu, LK_LOOP);
    if (fds[0].revents & POLLIN) {
        uint64_t v;
        if (read(cm->evfd, &v, sizeof v) < 0 && errno != EAGAIN)
            core_fail(cm->c, "read of the wake-up eventfd: %s", strerror(errno));
        tp_drain_ring(cm->t);
    }
    run_deferred(cm);
    received = cm->c->stats.msgs_recv;
    /* what came first, then the verdicts (live_duty reads the peers
     * itself after a wait that left them to a polling thread): a verdict
     * on bytes left unread blames a live peer for this thread's own
     * lateness (simcomm seeds 2432 and 23443) */
    peers_receive(cm, fds + 2);
    live_duty(&cm->live, now_ns(), cm->c->nranks, cm->c->rank, !leader, &heartbeat_io, cm);
    peers_flush(cm);
    if (cm->c->stats.msgs_recv != received)
        cm->awake_until = now_ns() + cm->c->spin_ns;
    /* a leader ends once it also passed on every finalize routed through it */
    cm->stopping = live_finish(cm->c->nranks, cm->c->rank, cm->self_finalized &&
                               cm->relay.finalizes == route_transits(&cm->route), &finish_io, cm);
    fence(cm, now_ns());
    mu_unlock(&cm->loop_mu, LK_LOOP);
}

/* core.poll: an application thread waiting for a reply it expects within
 * microseconds receives and delivers what comes from the peers itself
 * (leader/follower: whoever holds loop_mu plays the comm thread).  That
 * saves the comm thread's wake-up and its hand-off back to the waiter.
 * A comm thread asleep on the peer sockets is woken once to leave them to
 * us.  Between looks, and while the comm thread runs, we yield the CPU.
 * Returns once something came, at `until`, or when the comm thread
 * stopped. */
static void app_poll(void *ctx, uint64_t until)
{
    struct comm *cm = ctx;
    struct pollfd *fds = cm->app_fds;
    struct timespec zero = { 0, 0 };
    int got = 0;
    if (lead_join(&cm->lead))
        wake(cm);
    while (!got && !cm->stopping && now_ns() < until) {
        if (!mu_trylock(&cm->loop_mu, LK_LOOP)) {
            peer_fds(cm, fds, 0, 0);
            if (!cm->stopping && (got = ppoll(fds, (nfds_t)cm->ndirect, &zero, NULL) > 0)) {
                peers_receive(cm, fds);
                peers_flush(cm);
            }
            mu_unlock(&cm->loop_mu, LK_LOOP);
        }
        if (!got)
            sched_yield();
    }
    if (lead_leave(&cm->lead))
        wake(cm);               /* the peers are the comm thread's again */
}

static void *comm_main(void *arg)
{
    struct comm *cm = arg;
    int i;
    while (!cm->stopping)
        round_of_events(cm);
    mu_lock(&cm->loop_mu, LK_LOOP);
    for (i = 0; i < cm->ndirect; i++)
        close(cm->peers[cm->direct[i]].fd);
    mu_unlock(&cm->loop_mu, LK_LOOP);
    core_lock(cm->c);
    cm->c->phase = PHASE_FINISHED;
    core_wake(cm->c);
    core_unlock(cm->c);
    return NULL;
}

/* ---------------------------------------------------------- life cycle */

/* The ranks this rank holds a connection to, from the route, each with
 * its socket from peer_fds: DSM_OK, or DSM_EINVAL when one is missing. */
static int take_direct(struct comm *cm, const int *peer_fds, char *err)
{
    struct core *c = cm->c;
    int r;
    for (r = 0; r < c->nranks; r++) {
        int direct = route_direct(&cm->route, c->rank, r);
        if (direct && peer_fds[r] < 0) {
            dsm_err(err, "no connection to rank %d", r);
            return DSM_EINVAL;
        }
        peer_init(&cm->peers[r], cm->t, r, direct ? peer_fds[r] : -1, &cm->report, &cm->relay);
        if (direct)
            cm->direct[cm->ndirect++] = r;
    }
    c->stats.connections = (uint64_t)cm->ndirect;
    return DSM_OK;
}

/* Free what comm_open allocated (the peer sockets stay the caller's). */
static void comm_free(struct comm *cm)
{
    int r;
    if (cm->peers)
        for (r = 0; r < cm->c->nranks; r++)
            peer_free(&cm->peers[r]);
    if (cm->evfd >= 0)
        close(cm->evfd);
    route_free(&cm->route);
    free(cm->peers);
    free(cm->direct);
    free(cm->fds);
    free(cm->app_fds);
    free(cm);
}

int comm_open(struct transport *t, struct core *c, const int *peer_fds, const int *leaders,
              int master_fd, char *err)
{
    struct comm *cm = calloc(1, sizeof *cm);
    size_t n = (size_t)c->nranks;
    int i, rc;
    if (!cm)
        return dsm_err_sys(err, ENOMEM, "comm thread state");
    cm->evfd = -1;
    cm->t = t;
    cm->c = c;
    if ((rc = route_init(&cm->route, c->nranks, c->rank, leaders, err))) {
        free(cm);
        return rc;
    }
    if (!(cm->peers = calloc(n, sizeof *cm->peers)) || !(cm->direct = calloc(n, sizeof(int))) ||
        !(cm->fds = calloc(n + 2, sizeof *cm->fds)) ||
        !(cm->app_fds = calloc(n, sizeof *cm->app_fds))) {
        rc = dsm_err_sys(err, ENOMEM, "comm thread state");
        goto err;
    }
    cm->report.master_fd = master_fd;
    cm->relay = (struct relay){ .peers = cm->peers, .route = &cm->route };
    live_init(&cm->live, c->heartbeat_ns, FENCE_NS, now_ns());
    if ((cm->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        rc = dsm_err_sys(err, errno, "eventfd");
        goto err;
    }
    if ((rc = take_direct(cm, peer_fds, err)))
        goto err;
    for (i = 0; i < cm->ndirect; i++)
        if ((rc = net_prepare(cm->peers[cm->direct[i]].fd, err)))
            goto err;
    pthread_mutex_init(&cm->loop_mu, NULL);
    cm->fds[0] = (struct pollfd){ .fd = cm->evfd, .events = POLLIN };
    cm->fds[1] = (struct pollfd){ .fd = master_fd, .events = POLLRDHUP };
    tp_init(t, c, &socket_ops, cm);
    tp_register(t, DSM_FINALIZE, on_finalize, cm, 0);
    tp_register(t, DSM_HEARTBEAT, on_heartbeat, cm, 0);
    tp_register(t, DSM_LOST, on_lost, cm, PEER_LOST_MAX);
    return DSM_OK;
err:
    comm_free(cm);
    return rc;
}

int comm_run(struct transport *t, int wait_reply, char *err)
{
    struct comm *cm = t->backend;
    sigset_t all, old;
    int rc;
    /* every signal blocked in the thread, so signals go to the application's */
    sigfillset(&all);
    cm->c->poll_ctx = cm;
    cm->c->poll = wait_reply ? app_poll : NULL;
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
    if (!cm)
        return;
    cm->c->poll = NULL;
    while (cm->deferred) {
        struct deferred *d = cm->deferred;
        cm->deferred = d->next;
        free(d);
    }
    pthread_mutex_destroy(&cm->loop_mu);
    comm_free(cm);
    tp_free(t);
    t->backend = NULL;
}
