/* The reference for the benchmarks: a raw request/reply ping-pong over a
 * TCP socket, in C, timed per round trip.  Compiled by bench/reference.py. */
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

static int xfer(int fd, char *buf, size_t n, int sending)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = sending ? send(fd, buf + done, n - done, MSG_NOSIGNAL)
                            : recv(fd, buf + done, n - done, 0);
        if (k < 0 && errno == EINTR)
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
 * of each goes to out_ns.  Server: the mirror image.  0 or -1. */
int pingpong(int fd, int client, int iters, int req_bytes, int reply_bytes, uint64_t *out_ns)
{
    static char buf[1 << 20];
    int i;
    if (req_bytes > (int)sizeof buf || reply_bytes > (int)sizeof buf)
        return -1;
    for (i = 0; i < iters; i++) {
        uint64_t t = ns();
        if (client) {
            if (xfer(fd, buf, (size_t)req_bytes, 1) || xfer(fd, buf, (size_t)reply_bytes, 0))
                return -1;
            out_ns[i] = ns() - t;
        } else if (xfer(fd, buf, (size_t)req_bytes, 0) || xfer(fd, buf, (size_t)reply_bytes, 1)) {
            return -1;
        }
    }
    return 0;
}
