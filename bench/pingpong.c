/* The references for the benchmarks, in C over a TCP socket: a raw
 * request/reply ping-pong timed per round trip, and a one-way stream.
 * Each comes two ways: blocking in recv/send, or busy-polling (the same
 * calls with MSG_DONTWAIT, retried at once while they would block), which
 * is the true limit of the link where a thread may spin.
 * Compiled by bench/reference.py. */
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

/* 1 when a call that moved nothing should simply be retried: interrupted,
 * or (busy-polling) it would have blocked. */
static int again(ssize_t k, int poll)
{
    return k < 0 && (errno == EINTR || (poll && (errno == EAGAIN || errno == EWOULDBLOCK)));
}

/* Send or receive exactly n bytes, blocking or busy-polling.  0 or -1. */
static int xfer(int fd, char *buf, size_t n, int sending, int poll)
{
    int flags = poll ? MSG_DONTWAIT : 0;
    size_t done = 0;
    while (done < n) {
        ssize_t k = sending ? send(fd, buf + done, n - done, MSG_NOSIGNAL | flags)
                            : recv(fd, buf + done, n - done, flags);
        if (again(k, poll))
            continue;
        if (k <= 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

static uint64_t ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Client: iters round trips of req_bytes out and reply_bytes back; the time
 * of each goes to out_ns.  Server: the mirror image.  Both sides block, or
 * both busy-poll (poll).  0 or -1. */
int pingpong(int fd, int client, int iters, int req_bytes, int reply_bytes, uint64_t *out_ns,
             int poll)
{
    static char buf[1 << 20];
    int i;
    if (req_bytes > (int)sizeof buf || reply_bytes > (int)sizeof buf)
        return -1;
    for (i = 0; i < iters; i++) {
        uint64_t t = ns();
        if (client) {
            if (xfer(fd, buf, (size_t)req_bytes, 1, poll)
                || xfer(fd, buf, (size_t)reply_bytes, 0, poll))
                return -1;
            out_ns[i] = ns() - t;
        } else if (xfer(fd, buf, (size_t)req_bytes, 0, poll)
                   || xfer(fd, buf, (size_t)reply_bytes, 1, poll)) {
            return -1;
        }
    }
    return 0;
}

/* Sender: total bytes in chunks of `chunk`, blocking, then wait for a 1-byte
 * ack.  Receiver: read them all, blocking or busy-polling (poll), send the
 * ack.  Returns the ns it took on the receiver's side (from the first byte
 * read), or 0 on error. */
uint64_t stream(int fd, int sender, uint64_t total, int chunk, int poll)
{
    static char buf[1 << 20];
    uint64_t done = 0, t = 0;
    char ack = 1;
    if (chunk > (int)sizeof buf)
        return 0;
    while (done < total) {
        size_t n = total - done < (uint64_t)chunk ? (size_t)(total - done) : (size_t)chunk;
        if (sender) {
            if (xfer(fd, buf, n, 1, 0))
                return 0;
        } else {
            ssize_t k = recv(fd, buf, n, poll ? MSG_DONTWAIT : 0);
            if (again(k, poll))
                continue;
            if (k <= 0)
                return 0;
            if (!t)
                t = ns();
            n = (size_t)k;
        }
        done += n;
    }
    if (sender)
        return xfer(fd, &ack, 1, 0, 0) ? 0 : 1;
    t = ns() - t;
    return xfer(fd, &ack, 1, 1, 0) ? 0 : t;
}
