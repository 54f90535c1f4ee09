/* Issue 13: do the kernel's socket options help the DSM's traffic on
 * loopback TCP?  A standalone experiment; nothing in libdsm uses it.
 *
 *   cc -O2 -o /tmp/kernel_opts bench/kernel_opts.c -pthread
 *   /tmp/kernel_opts [rounds [round_trips]]      (defaults: 9 and 20000)
 *
 * Two threads, one fresh loopback connection per trial, sockets set up as
 * libdsm/csrc/net.c does (TCP_NODELAY, 4 MiB SO_SNDBUF and SO_RCVBUF).
 * Each round runs every variant once, in an order that rotates from round
 * to round; the tables give the median over the rounds and the range.
 *
 * 1. Stream: 256 MiB as 256 messages of a 24-byte header and a 1 MiB
 *    payload from page-aligned memory, one sendmsg with two iovecs, the
 *    sender non-blocking and waiting in poll as the DSM's comm thread
 *    does; the receiver reads each header and payload with blocking recv
 *    (MSG_WAITALL) and checks the sequence numbers written into them.
 *    plain:    sendmsg(MSG_DONTWAIT)
 *    zerocopy: SO_ZEROCOPY, sendmsg(MSG_DONTWAIT | MSG_ZEROCOPY), from a
 *              ring of 8 buffers; a buffer is written again only after
 *              every send from it is completed on the error queue
 *              (recvmsg(MSG_ERRQUEUE)).  The completions say how many
 *              sends the kernel copied anyway (SO_EE_CODE_ZEROCOPY_COPIED).
 *    Figures: MB/s (10^6 bytes a second, first send to the receiver's
 *    ack), and the CPU time of each thread.
 *
 * 2. Ping-pong: a 16-byte request answered by a 4 KiB reply, blocking
 *    sockets, 1000 warm-up round trips then round_trips timed ones.
 *    plain:    recv/send
 *    quickack: setsockopt(TCP_QUICKACK, 1) after every recv, both sides
 *    busypoll: SO_BUSY_POLL of 50 us on both sockets (root may set it
 *              above net.core.busy_read), blocking recv
 *    Figures: median and p99 of the round trip, in us, and the TCP
 *    segments the host sent a round trip (Tcp OutSegs, so other traffic
 *    on the machine counts too; 2 is the request and the reply, with no
 *    pure ACKs).  The run also says whether the connection has a NAPI id
 *    (SO_INCOMING_NAPI_ID), without which the kernel has nothing to
 *    busy-poll.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>     /* before linux/errqueue.h, which uses struct timespec */
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif
#ifndef SO_INCOMING_NAPI_ID
#define SO_INCOMING_NAPI_ID 56
#endif

#define HDR 24
#define PAYLOAD (1 << 20)
#define TOTAL (256u << 20)
#define NMSG (TOTAL / PAYLOAD)
#define SLOTS 8
#define MAX_IDS (1 << 20)           /* zerocopy sends in one trial, at most */
#define SOCKET_BUFFER (4 << 20)     /* as libdsm/csrc/net.c */
#define REQ 16
#define REPLY 4096
#define WARMUP 1000
#define MAX_ROUNDS 64

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double thread_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
           + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* A connected loopback pair, each end with Nagle off and 4 MiB buffers. */
static void tcp_pair(int fds[2])
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int one = 1, bufsize = SOCKET_BUFFER, i;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0
        || getsockname(l, (struct sockaddr *)&a, &len) < 0)
        die("listen");
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    if ((fds[1] = accept(l, NULL, NULL)) < 0)
        die("accept");
    close(l);
    for (i = 0; i < 2; i++)
        if (setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0
            || setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize) < 0
            || setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize) < 0)
            die("setsockopt");
}

/* Send or receive exactly n bytes on a blocking socket.  0 or -1. */
static int xfer(int fd, void *buf, size_t n, int sending)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = sending ? send(fd, (char *)buf + done, n - done, MSG_NOSIGNAL)
                            : recv(fd, (char *)buf + done, n - done, MSG_WAITALL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

/* ---- 1. Stream ---------------------------------------------------------- */

struct zc {
    unsigned char *done;        /* done[id]: that send's completion came */
    uint32_t next_id;           /* id of the next send that moves bytes */
    uint32_t low;               /* every id below this one is completed */
    long copied, zerocopied;    /* sends completed, by what the kernel did */
};

/* Read what is on the error queue; first wait for some if `wait`.  0 or -1. */
static int reap(int fd, struct zc *z, int wait)
{
    char control[128];
    for (;;) {
        struct msghdr msg = { .msg_control = control, .msg_controllen = sizeof control };
        struct cmsghdr *cm;
        if (recvmsg(fd, &msg, MSG_ERRQUEUE) < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            if (!wait)
                return 0;
            struct pollfd p = { .fd = fd, .events = 0 };    /* POLLERR is always asked */
            if (poll(&p, 1, -1) < 0 && errno != EINTR)
                return -1;
            continue;
        }
        wait = 0;
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            struct sock_extended_err *e = (struct sock_extended_err *)CMSG_DATA(cm);
            uint32_t id;
            if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR)
                  || (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
                continue;
            if (e->ee_origin != SO_EE_ORIGIN_ZEROCOPY || e->ee_errno != 0)
                return -1;
            for (id = e->ee_info; id <= e->ee_data && id < MAX_IDS; id++)
                z->done[id] = 1;
            if (e->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
                z->copied += e->ee_data - e->ee_info + 1;
            else
                z->zerocopied += e->ee_data - e->ee_info + 1;
        }
        while (z->low < z->next_id && z->done[z->low])
            z->low++;
    }
}

struct stream_res {
    double mb_s, send_cpu_s, recv_cpu_s;
    long sends, copied, zerocopied;
    int err;
};

struct stream_ends { int fds[2]; struct stream_res r; };

static void *stream_receiver(void *arg)
{
    struct stream_ends *t = arg;
    int fd = t->fds[1];
    struct stream_res *r = &t->r;
    uint64_t hdr[HDR / 8], *buf = aligned_alloc(4096, PAYLOAD);
    double cpu = thread_cpu_s();
    uint64_t m;
    char ack = 1;
    for (m = 0; m < NMSG; m++) {
        if (xfer(fd, hdr, HDR, 0) || xfer(fd, buf, PAYLOAD, 0)
            || hdr[0] != m || buf[0] != m || buf[PAYLOAD / 8 - 1] != m) {
            fprintf(stderr, "stream: message %lu lost or corrupt\n", (unsigned long)m);
            r->err = 1;
            break;
        }
    }
    r->recv_cpu_s = thread_cpu_s() - cpu;
    xfer(fd, &ack, 1, 1);
    free(buf);
    return NULL;
}

/* One trial: 256 MiB from fds[0] to fds[1]. */
static struct stream_res stream_trial(int zerocopy)
{
    struct stream_ends t;
    static uint64_t hdrs[SLOTS][HDR / 8];
    static char *payloads;
    uint32_t slot_last[SLOTS];
    int have[SLOTS] = { 0 };
    struct zc z = { 0 };
    pthread_t th;
    uint64_t t0, m;
    double cpu;
    char ack;
    int one = 1, fd;

    memset(&t, 0, sizeof t);
    if (!payloads && !(payloads = aligned_alloc(4096, (size_t)SLOTS * PAYLOAD)))
        die("aligned_alloc");
    memset(payloads, 0x5a, (size_t)SLOTS * PAYLOAD);    /* faulted in before timing */
    tcp_pair(t.fds);
    fd = t.fds[0];
    if (zerocopy) {
        if (setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) < 0)
            die("SO_ZEROCOPY");
        if (!(z.done = calloc(MAX_IDS, 1)))
            die("calloc");
    }
    pthread_create(&th, NULL, stream_receiver, &t);
    cpu = thread_cpu_s();
    t0 = now_ns();
    for (m = 0; m < NMSG && !t.r.err; m++) {
        int s = (int)(m % SLOTS);
        uint64_t *p = (uint64_t *)(payloads + (size_t)s * PAYLOAD);
        struct iovec iov[2] = { { hdrs[s], HDR }, { p, PAYLOAD } };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
        size_t left = HDR + PAYLOAD;
        /* The kernel may still read this buffer until its sends complete. */
        while (zerocopy && have[s] && slot_last[s] >= z.low)
            if (reap(fd, &z, 1) < 0)
                die("recvmsg(MSG_ERRQUEUE)");
        hdrs[s][0] = m;
        p[0] = p[PAYLOAD / 8 - 1] = m;
        while (left) {
            ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT | (zerocopy ? MSG_ZEROCOPY : 0));
            if (n < 0) {
                struct pollfd pf = { .fd = fd, .events = POLLOUT };
                if (errno == EINTR)
                    continue;
                if (zerocopy && errno == ENOBUFS) {     /* too many notifications pending */
                    if (reap(fd, &z, 1) < 0)
                        die("recvmsg(MSG_ERRQUEUE)");
                    continue;
                }
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    die("sendmsg");
                if (poll(&pf, 1, -1) < 0 && errno != EINTR)
                    die("poll");
                if (zerocopy && (pf.revents & POLLERR) && reap(fd, &z, 0) < 0)
                    die("recvmsg(MSG_ERRQUEUE)");
                continue;
            }
            t.r.sends++;
            if (zerocopy) {
                if (z.next_id >= MAX_IDS)
                    die("too many zerocopy sends");
                slot_last[s] = z.next_id++;
                have[s] = 1;
            }
            left -= (size_t)n;
            while (n > 0) {     /* step the iovecs past what went */
                size_t k = (size_t)n < mh.msg_iov->iov_len ? (size_t)n : mh.msg_iov->iov_len;
                mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + k;
                mh.msg_iov->iov_len -= k;
                n -= (ssize_t)k;
                if (!mh.msg_iov->iov_len) {
                    mh.msg_iov++;
                    mh.msg_iovlen--;
                }
            }
        }
        if (zerocopy && reap(fd, &z, 0) < 0)
            die("recvmsg(MSG_ERRQUEUE)");
    }
    for (;;) {      /* the ack, read without blocking the error queue */
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        ssize_t k = recv(fd, &ack, 1, MSG_DONTWAIT);
        if (k == 1)
            break;
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            die("stream ack");
        poll(&pf, 1, -1);
        if (zerocopy && reap(fd, &z, 0) < 0)
            die("recvmsg(MSG_ERRQUEUE)");
    }
    t.r.mb_s = (double)TOTAL / ((now_ns() - t0) / 1e9) / 1e6;
    while (zerocopy && z.low < z.next_id)
        if (reap(fd, &z, 1) < 0)
            die("recvmsg(MSG_ERRQUEUE)");
    t.r.send_cpu_s = thread_cpu_s() - cpu;
    pthread_join(th, NULL);
    t.r.copied = z.copied;
    t.r.zerocopied = z.zerocopied;
    free(z.done);
    close(t.fds[0]);
    close(t.fds[1]);
    return t.r;
}

/* ---- 2. Ping-pong ------------------------------------------------------- */

enum { PLAIN, QUICKACK, BUSYPOLL, NPP };
static const char *pp_name[NPP] = { "plain", "quickack", "busypoll" };

struct pp { int fd, client, mode, iters, err; uint64_t *ns; };

static void quickack(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one) < 0)
        die("TCP_QUICKACK");
}

static void *pp_side(void *arg)
{
    struct pp *p = arg;
    static __thread char buf[REPLY];
    int i;
    for (i = 0; i < WARMUP + p->iters; i++) {
        uint64_t t = now_ns();
        if (p->client) {
            if (xfer(p->fd, buf, REQ, 1) || xfer(p->fd, buf, REPLY, 0))
                break;
            if (p->mode == QUICKACK)
                quickack(p->fd);
            if (i >= WARMUP)
                p->ns[i - WARMUP] = now_ns() - t;
        } else {
            if (xfer(p->fd, buf, REQ, 0))
                break;
            if (p->mode == QUICKACK)
                quickack(p->fd);
            if (xfer(p->fd, buf, REPLY, 1))
                break;
        }
    }
    p->err = i < WARMUP + p->iters;
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The host's TCP segments sent so far (Tcp OutSegs in /proc/net/snmp), or
 * 0 if it cannot be read.  Counts every connection, so it is a rough
 * measure on a shared machine. */
static unsigned long long out_segs(void)
{
    char names[1024], values[1024], *n, *v, *sn, *sv;
    unsigned long long segs = 0;
    FILE *f = fopen("/proc/net/snmp", "r");
    if (!f)
        return 0;
    while (fgets(names, sizeof names, f) && fgets(values, sizeof values, f)) {
        if (strncmp(names, "Tcp:", 4) || strncmp(values, "Tcp:", 4))
            continue;
        for (n = strtok_r(names, " \n", &sn), v = strtok_r(values, " \n", &sv); n && v;
             n = strtok_r(NULL, " \n", &sn), v = strtok_r(NULL, " \n", &sv))
            if (!strcmp(n, "OutSegs"))
                segs = strtoull(v, NULL, 10);
        break;
    }
    fclose(f);
    return segs;
}

/* One trial; the median and p99 round trip in us.  *napi: the server
 * socket's NAPI id after the run (0: nothing to busy-poll). */
static void pp_trial(int mode, int iters, uint64_t *ns, double *med, double *p99, double *segs,
                     int *napi)
{
    unsigned long long seg0;
    int fds[2], i, us = 50;
    socklen_t len = sizeof *napi;
    struct pp c, s;
    pthread_t th;
    tcp_pair(fds);
    for (i = 0; mode == BUSYPOLL && i < 2; i++)
        if (setsockopt(fds[i], SOL_SOCKET, SO_BUSY_POLL, &us, sizeof us) < 0)
            die("SO_BUSY_POLL");
    c = (struct pp){ fds[0], 1, mode, iters, 0, ns };
    s = (struct pp){ fds[1], 0, mode, iters, 0, NULL };
    seg0 = out_segs();
    pthread_create(&th, NULL, pp_side, &s);
    pp_side(&c);
    pthread_join(th, NULL);
    *segs = (double)(out_segs() - seg0) / (WARMUP + iters);
    if (c.err || s.err) {
        fprintf(stderr, "ping-pong %s failed\n", pp_name[mode]);
        exit(1);
    }
    *napi = 0;
    getsockopt(fds[1], SOL_SOCKET, SO_INCOMING_NAPI_ID, napi, &len);
    close(fds[0]);
    close(fds[1]);
    qsort(ns, (size_t)iters, sizeof *ns, cmp_u64);
    *med = ns[iters / 2] / 1e3;
    *p99 = ns[(size_t)iters * 99 / 100] / 1e3;
}

/* The median of v[0..n) (sorted in place), and its range. */
static void summary(double *v, int n, double *med, double *lo, double *hi)
{
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    *lo = v[0];
    *hi = v[n - 1];
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 9, iters = argc > 2 ? atoi(argv[2]) : 20000;
    static double mb[2][MAX_ROUNDS], scpu[2][MAX_ROUNDS], rcpu[2][MAX_ROUNDS];
    static double med[NPP][MAX_ROUNDS], p99[NPP][MAX_ROUNDS], segs[NPP][MAX_ROUNDS];
    long sends[2] = { 0 }, copied = 0, zerocopied = 0;
    int r, v, napi[NPP] = { 0 };
    uint64_t *ns;
    double a, lo, hi, b, blo, bhi;

    if (rounds < 1 || rounds > MAX_ROUNDS || iters < 100)
        return fprintf(stderr, "usage: %s [rounds (1-%d) [round_trips (>= 100)]]\n", argv[0],
                       MAX_ROUNDS), 2;
    if (!(ns = malloc(sizeof *ns * (size_t)iters)))
        die("malloc");
    printf("loopback TCP, %d rounds, variants alternated; median over rounds [range]\n\n", rounds);

    for (r = 0; r < rounds; r++)
        for (v = 0; v < 2; v++) {
            int zc = (v + r) % 2;
            struct stream_res s = stream_trial(zc);
            if (s.err)
                return 1;
            mb[zc][r] = s.mb_s;
            scpu[zc][r] = s.send_cpu_s;
            rcpu[zc][r] = s.recv_cpu_s;
            sends[zc] += s.sends;
            copied += s.copied;
            zerocopied += s.zerocopied;
        }
    printf("1. stream, 256 MiB in 1 MiB messages (24-byte header + payload)\n");
    printf("   %-9s %22s %22s %22s %9s\n", "", "MB/s", "sender CPU ms", "receiver CPU ms",
           "sendmsgs");
    for (v = 0; v < 2; v++) {
        printf("   %-9s", v ? "zerocopy" : "plain");
        summary(mb[v], rounds, &a, &lo, &hi);
        printf(" %6.0f [%5.0f-%5.0f]", a, lo, hi);
        summary(scpu[v], rounds, &a, &lo, &hi);
        printf("   %6.1f [%5.1f-%5.1f]", a * 1e3, lo * 1e3, hi * 1e3);
        summary(rcpu[v], rounds, &a, &lo, &hi);
        printf("   %6.1f [%5.1f-%5.1f]", a * 1e3, lo * 1e3, hi * 1e3);
        printf(" %9.0f\n", (double)sends[v] / rounds);
    }
    printf("   zerocopy completions: %ld sends copied by the kernel anyway "
           "(SO_EE_CODE_ZEROCOPY_COPIED), %ld sent without a copy\n\n", copied, zerocopied);

    for (r = 0; r < rounds; r++)
        for (v = 0; v < NPP; v++) {
            int mode = (v + r) % NPP;
            pp_trial(mode, iters, ns, &med[mode][r], &p99[mode][r], &segs[mode][r], &napi[mode]);
        }
    printf("2. ping-pong, 16 B request / 4 KiB reply, %d round trips a trial\n", iters);
    printf("   %-9s %22s %22s %18s\n", "", "median us", "p99 us", "segments a trip");
    for (v = 0; v < NPP; v++) {
        summary(med[v], rounds, &a, &lo, &hi);
        summary(p99[v], rounds, &b, &blo, &bhi);
        printf("   %-9s %6.1f [%5.1f-%5.1f]   %6.1f [%5.1f-%5.1f]", pp_name[v], a, lo, hi, b,
               blo, bhi);
        summary(segs[v], rounds, &a, &lo, &hi);
        printf("   %14.2f\n", a);
    }
    printf("   SO_INCOMING_NAPI_ID of the busy-polled socket: %d%s\n", napi[BUSYPOLL],
           napi[BUSYPOLL] ? "" : " (none: loopback has no NAPI context to busy-poll)");
    free(ns);
    return 0;
}
