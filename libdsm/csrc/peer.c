/* Layer 1: one peer connection of the socket backend (peer.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "commstep.h"
#include "net.h"
#include "peer.h"

#define RX_CHUNK (64 * 1024)    /* bytes one recv asks for, besides payloads received in place */
#define DIRECT_MIN 4096         /* payloads this large are sent without a copy */
#define LOST_PEER 5             /* services/wire.py Message.LOST_PEER */
#define LOST_HEAD 3             /* DSM_LOST's payload: how (1: silent), the finder (u16), why */

void peer_init(struct peer *p, struct transport *t, int rank, int fd,
               struct loss_report *report, struct relay *relay)
{
    memset(p, 0, sizeof *p);
    p->t = t;
    p->rank = rank;
    p->fd = fd;
    p->eof = p->shut = fd < 0;
    p->report = report;
    p->relay = relay;
    p->last_rx_ns = p->last_tx_ns = now_ns();
    pthread_mutex_init(&p->txmu, NULL);
}

void peer_free(struct peer *p)
{
    free(p->rx.data);
    free(p->tx.data);
    pthread_mutex_destroy(&p->txmu);
}

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

/* Append n bytes to b: 0, or -1 (out of memory). */
static int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n))
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* Characters of s as a JSON string body into out (at most cap - 1). */
static size_t json_text(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            n += (size_t)snprintf(out + n, cap - n, "\\%c", ch);
        else if (ch < 0x20)
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        else
            out[n++] = (char)ch;
    }
    out[n] = 0;
    return n;
}

/* The LOST_PEER message to dsmexec (peer.h), once per process, in one
 * write: the rank's Python thread writes on the same connection only at
 * init and finalize, never while a loss is being found. */
static void tell_launcher(struct loss_report *rep, int peer, const char *how, const char *why)
{
    unsigned char frame[5 + 64 + 2 * DSM_ERRLEN];
    char text[2 * DSM_ERRLEN];
    int len;
    ssize_t n;
    size_t off = 0;
    if (!rep || rep->master_fd < 0 || __atomic_exchange_n(&rep->sent, 1, __ATOMIC_SEQ_CST))
        return;
    json_text(text, sizeof text, why);
    len = snprintf((char *)frame + 5, sizeof frame - 5,
                   "{\"peer\":%d,\"how\":\"%s\",\"peer_error\":\"%s\"}", peer, how, text);
    frame[0] = LOST_PEER;
    frame[1] = (unsigned char)(len >> 24);
    frame[2] = (unsigned char)(len >> 16);
    frame[3] = (unsigned char)(len >> 8);
    frame[4] = (unsigned char)len;
    while (off < (size_t)len + 5) {
        n = send(rep->master_fd, frame + off, (size_t)len + 5 - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;             /* dsmexec is gone: nobody to tell */
        off += (size_t)n;
    }
}

/* Send an encoded header and its payload (len bytes) of type `type`.  It
 * goes straight onto the socket, behind what the outbox holds, with no
 * copy, when it is `now` (application threads, to save a hand-off) or
 * carries a payload of DIRECT_MIN bytes or more (pages are sent from the
 * read/write view: the kernel copies them before sendmsg returns).  Other
 * messages, and what the socket did not take, go into the outbox, which
 * the comm thread flushes at the end of each round of events, so that a
 * burst of small messages leaves in a few writes.  Returns 1 if something
 * is left in the outbox. */
static int transmit(struct peer *p, const unsigned char *hdr, int type, const void *payload,
                    size_t len, int now)
{
    size_t queued, sent = 0;
    ssize_t n;
    int left, oom = 0;
    mu_lock(&p->txmu, LK_TX);
    if (p->eof || p->shut) {
        mu_unlock(&p->txmu, LK_TX);
        if (type != DSM_LOST)   /* a loss being recorded already: not a loss of p */
            peer_lost(p, "closed", "cannot send %s to rank %d: its connection is closed",
                      msg_name(type), p->rank);
        return 0;
    }
    queued = p->tx.len - p->tx.off;
    if (now || len >= DIRECT_MIN) {
        if ((n = net_send_frame(p->fd, p->tx.data + p->tx.off, queued, hdr, payload, len)) < 0) {
            int e = errno;
            mu_unlock(&p->txmu, LK_TX);
            if (type != DSM_LOST)
                peer_lost(p, "closed", "send %s to rank %d: %s", msg_name(type), p->rank,
                          strerror(e));
            return 0;
        }
        sent = (size_t)n;
        p->tx.off += sent < queued ? sent : queued;
        sent = sent > queued ? sent - queued : 0;
    }
    if (sent < MSG_WIRE_SIZE)
        oom |= buf_append(&p->tx, hdr + sent, MSG_WIRE_SIZE - sent);
    sent = sent > MSG_WIRE_SIZE ? sent - MSG_WIRE_SIZE : 0;
    if (len > sent)
        oom |= buf_append(&p->tx, (const unsigned char *)payload + sent, len - sent);
    left = p->tx.off < p->tx.len;
    if (!left)
        p->tx.off = p->tx.len = 0;
    if (p->t->core->heartbeat_ns)
        p->last_tx_ns = now_ns();
    mu_unlock(&p->txmu, LK_TX);
    if (oom)
        core_fail(p->t->core, "out of memory buffering %s for rank %d", msg_name(type),
                  p->rank);
    return left;
}

/* Tell each direct peer but `from` that has no connection of its own to
 * rank `lost` (one reached through this rank) that it is lost, as rank
 * `finder` found (payload: how, finder, why): once per process, straight
 * onto the sockets, before the failure is recorded (a waiting thread may
 * end the process as soon as it is), so that on each connection the notice
 * comes before this rank's end of stream, and the peer names `lost`. */
static void spread_loss(struct relay *rl, int lost, int from, int finder, const char *how,
                        const char *why)
{
    const struct route *rt = rl->route;
    unsigned char body[PEER_LOST_MAX], hdr[MSG_WIRE_SIZE];
    struct msg m = { .type = DSM_LOST, .origin = (uint16_t)lost, .from = (uint16_t)rt->self };
    size_t n = strnlen(why, DSM_ERRLEN - 1);
    int r;
    if (__atomic_exchange_n(&rl->spread, 1, __ATOMIC_SEQ_CST))
        return;
    body[0] = how[0] == 's';
    body[1] = (unsigned char)(finder >> 8);
    body[2] = (unsigned char)finder;
    memcpy(body + LOST_HEAD, why, n);
    m.len = (uint32_t)(LOST_HEAD + n);
    for (r = 0; r < rt->nranks; r++) {
        struct peer *q = &rl->peers[r];
        if (r == from || r == lost || !route_direct(rt, rt->self, r) ||
            route_direct(rt, r, lost) || __atomic_load_n(&q->eof, __ATOMIC_RELAXED))
            continue;
        m.to = (uint16_t)r;
        msg_encode(&m, hdr);
        transmit(q, hdr, DSM_LOST, body, m.len, 1);
    }
}

void peer_lost(struct peer *p, const char *how, const char *fmt, ...)
{
    char why[DSM_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    tell_launcher(p->report, p->rank, how, why);
    spread_loss(p->relay, p->rank, -1, p->t->core->rank, how, why);
    core_fail_peer(p->t->core, p->rank, "%s", why);
}

/* dsmexec hears of the loss from the rank that found it: this rank tells
 * it nothing, not even of the losses that follow (its leader closing). */
void peer_lost_heard(struct peer *p, const struct msg *m, const unsigned char *payload)
{
    char why[DSM_ERRLEN];
    int finder;
    if (m->len < LOST_HEAD)
        return;
    finder = payload[1] << 8 | payload[2];
    snprintf(why, sizeof why, "%.*s", (int)(m->len - LOST_HEAD), (const char *)payload + LOST_HEAD);
    if (p->report)
        __atomic_store_n(&p->report->sent, 1, __ATOMIC_SEQ_CST);
    spread_loss(p->relay, m->origin, m->from, finder, payload[0] ? "silent" : "closed", why);
    core_fail_peer(p->t->core, m->origin, "%s (found by rank %d)", why, finder);
}

int peer_send(struct peer *p, int to, const struct msg *m, const void *payload, int now)
{
    unsigned char hdr[MSG_WIRE_SIZE];
    struct msg w = *m;
    w.from = (uint16_t)p->t->core->rank;
    w.to = (uint16_t)to;
    msg_encode(&w, hdr);
    __atomic_fetch_add(&p->t->core->stats.msgs_sent, m->type != DSM_HEARTBEAT, __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->t->core->stats.host_msgs, m->type >= DSM_HREQ && m->type <= DSM_HINV_ACK,
                       __ATOMIC_RELAXED);
    if (m->type == DSM_PAGE && m->len)
        __atomic_fetch_add(&p->t->core->stats.pages_sent, m->len / p->t->core->page_size,
                           __ATOMIC_RELAXED);
    return transmit(p, hdr, m->type, payload, m->len, now);
}

/* Comm thread: pass a received message (its header as it came, and its
 * payload) on to the next hop towards m->to. */
static void forward(struct peer *p, const struct msg *m, const unsigned char *hdr,
                    const unsigned char *payload)
{
    struct relay *rl = p->relay;
    rl->finalizes += m->type == DSM_FINALIZE;
    p->t->core->stats.forwarded++;
    transmit(&rl->peers[route_next(rl->route, m->to)], hdr, m->type, payload, m->len, 0);
}

/* A received header names two other ranks as its sender and destination,
 * and came the way this rank's route to its sender runs (routes are
 * symmetric): 0, or -1 with the failure recorded. */
static int check_route(struct peer *p, const struct msg *m)
{
    const struct route *rt = p->relay->route;
    if (m->from < rt->nranks && m->to < rt->nranks && m->from != m->to &&
        m->from != rt->self && route_next(rt, m->from) == p->rank)
        return 0;
    core_fail(p->t->core, "protocol error: %s from rank %d to rank %d came over rank %d's "
              "connection, which is not on the route between them", msg_name(m->type),
              m->from, m->to, p->rank);
    return -1;
}

/* Count and run one received message. */
static void deliver(struct peer *p, const struct msg *m, const unsigned char *payload)
{
    p->t->core->stats.msgs_recv += m->type != DSM_HEARTBEAT;
    tp_deliver(p->t, m, payload);
}

/* Deliver every complete message in a peer's receive buffer.  A message
 * whose payload has only partly come, and whose type has a sink, has the
 * rest received straight there (peer_read). */
static void parse(struct peer *p)
{
    struct msg m;
    while (p->rx.len - p->rx.off >= MSG_WIRE_SIZE) {
        unsigned char *h = p->rx.data + p->rx.off;
        size_t have = p->rx.len - p->rx.off - MSG_WIRE_SIZE;
        msg_decode(h, &m);
        if (check_route(p, &m) || tp_check(p->t, &m)) {
            p->rx.off = p->rx.len;
            return;
        }
        if (m.to != p->t->core->rank) {
            if (have < m.len)
                return;
            p->rx.off += MSG_WIRE_SIZE + m.len;
            forward(p, &m, h, m.len ? h + MSG_WIRE_SIZE : NULL);
            continue;
        }
        if (have < m.len && (p->sink = tp_sink_of(p->t, &m))) {
            memcpy(p->sink, h + MSG_WIRE_SIZE, have);
            p->sink_m = m;
            p->sink_got = have;
            p->rx.off = p->rx.len;
            return;
        }
        if (have < m.len)
            return;
        p->rx.off += MSG_WIRE_SIZE + m.len;
        deliver(p, &m, m.len ? h + MSG_WIRE_SIZE : NULL);
    }
}

/* One recv without blocking: the bytes, or 0 if none are there now or
 * the peer closed (p->eof, failing the job if it had not finalized). */
static size_t receive(struct peer *p, int self_finalized, void *dst, size_t len)
{
    ssize_t n;
    do {
        n = recv(p->fd, dst, len, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n <= 0) {               /* a peer closes only once every rank, we too, finalized */
        p->eof = 1;
        if (live_eof_lost(p->finalized, self_finalized))
            peer_lost(p, "closed", "rank %d closed its connection before finalize (%s)", p->rank,
                      n < 0 ? strerror(errno) : "end of stream");
        return 0;
    }
    p->last_rx_ns = p->t->core->heartbeat_ns ? now_ns() : 0;
    return (size_t)n;
}

/* How much the next recv into the buffer asks for: RX_CHUNK, or what the
 * partial message at its head still lacks, if more (a large collective).
 * Asking for little leaves a page payload to be received in place. */
static size_t rx_want(const struct peer *p)
{
    size_t have = p->rx.len - p->rx.off, need;
    struct msg m;
    if (have < MSG_WIRE_SIZE)
        return RX_CHUNK;
    msg_decode(p->rx.data + p->rx.off, &m);
    need = MSG_WIRE_SIZE + m.len - have;
    return need > RX_CHUNK ? need : RX_CHUNK;
}

void peer_read(struct peer *p, int self_finalized)
{
    size_t n, want;
    while (!p->eof) {
        if (p->sink) {          /* the rest of a payload, in place */
            unsigned char *dst = p->sink;
            if (!(n = receive(p, self_finalized, dst + p->sink_got, p->sink_m.len - p->sink_got)))
                break;
            if ((p->sink_got += n) < p->sink_m.len)
                continue;
            p->sink = NULL;
            deliver(p, &p->sink_m, dst);
            continue;
        }
        if (buf_reserve(&p->rx, want = rx_want(p))) {
            core_fail(p->t->core, "out of memory receiving from rank %d", p->rank);
            return;
        }
        if (!(n = receive(p, self_finalized, p->rx.data + p->rx.len, want)))
            break;
        p->rx.len += n;
        parse(p);
    }
    if (p->rx.off == p->rx.len)
        p->rx.off = p->rx.len = 0;
}

/* Write as much of a peer's outbox as the socket takes. */
void peer_flush(struct peer *p)
{
    ssize_t n;
    int failed = 0;
    mu_lock(&p->txmu, LK_TX);
    if (p->tx.off == p->tx.len || p->shut) {
        mu_unlock(&p->txmu, LK_TX);
        return;
    }
    do {
        n = send(p->fd, p->tx.data + p->tx.off, p->tx.len - p->tx.off,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        failed = errno;
        p->tx.off = p->tx.len;
    } else if (n > 0) {
        p->tx.off += (size_t)n;
    }
    if (p->tx.off == p->tx.len)
        p->tx.off = p->tx.len = 0;
    mu_unlock(&p->txmu, LK_TX);
    if (failed)
        peer_lost(p, "closed", "send to rank %d: %s", p->rank, strerror(failed));
}

