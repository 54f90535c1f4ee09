/* Socket and wire-format helpers.  Nothing here knows the protocol's
 * meaning; it only moves bytes. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "internal.h"

static const char *names[DSM_MSG_MAX] = {
    [DSM_REQ] = "DSM_REQ", [DSM_FWD] = "DSM_FWD", [DSM_PAGE] = "DSM_PAGE",
    [DSM_UPDATE] = "DSM_UPDATE", [DSM_INV] = "DSM_INV", [DSM_INV_ACK] = "DSM_INV_ACK",
    [DSM_BARRIER] = "DSM_BARRIER", [DSM_BARRIER_GO] = "DSM_BARRIER_GO",
    [DSM_FINALIZE] = "DSM_FINALIZE", [DSM_LOCK_ACQ] = "DSM_LOCK_ACQ",
    [DSM_LOCK_GRANT] = "DSM_LOCK_GRANT", [DSM_LOCK_REL] = "DSM_LOCK_REL",
    [DSM_BCAST] = "DSM_BCAST",
};

const char *msg_name(int type)
{
    return type > 0 && type < DSM_MSG_MAX ? names[type] : "unknown message";
}

/* Header layout: type u8, mode u8, origin u16, len u32, page u64, arg u64,
 * all big-endian. */
void msg_encode(const struct msg *m, unsigned char out[MSG_WIRE_SIZE])
{
    uint16_t origin = htobe16(m->origin);
    uint32_t len = htobe32(m->len);
    uint64_t page = htobe64(m->page), arg = htobe64(m->arg);
    out[0] = m->type;
    out[1] = m->mode;
    memcpy(out + 2, &origin, 2);
    memcpy(out + 4, &len, 4);
    memcpy(out + 8, &page, 8);
    memcpy(out + 16, &arg, 8);
}

void msg_decode(const unsigned char in[MSG_WIRE_SIZE], struct msg *m)
{
    uint16_t origin;
    uint32_t len;
    uint64_t page, arg;
    memcpy(&origin, in + 2, 2);
    memcpy(&len, in + 4, 4);
    memcpy(&page, in + 8, 8);
    memcpy(&arg, in + 16, 8);
    m->type = in[0];
    m->mode = in[1];
    m->origin = be16toh(origin);
    m->len = be32toh(len);
    m->page = be64toh(page);
    m->arg = be64toh(arg);
}

#define SOCKET_BUFFER (4 << 20)     /* a burst of read-ahead pages fits */

/* Make a connected peer socket non-blocking, with Nagle off and buffers
 * big enough for a burst of pages. */
int net_prepare(int fd, char *err)
{
    int one = 1, flags = fcntl(fd, F_GETFL), bufsize = SOCKET_BUFFER;
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        dsm_err(err, "fcntl(O_NONBLOCK) on fd %d: %s", fd, strerror(errno));
        return DSM_ESYS;
    }
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize) < 0) {
        dsm_err(err, "setsockopt on fd %d: %s", fd, strerror(errno));
        return DSM_ESYS;
    }
    return DSM_OK;
}

/* One sendmsg of header + payload without blocking.  Returns the bytes
 * sent (possibly fewer than asked), 0 if the socket is full, -1 on error. */
ssize_t net_send_frame(int fd, const unsigned char *hdr, const void *payload, size_t len)
{
    struct iovec iov[2] = {
        { (void *)hdr, MSG_WIRE_SIZE },
        { (void *)payload, len },
    };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
    ssize_t n;
    do {
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return n;
}
