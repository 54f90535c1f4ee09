/* Layer 1: socket helpers.  Nothing here knows the protocol's meaning; it
 * only moves bytes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "ground.h"
#include "net.h"
#include "proto.h"

#define SOCKET_BUFFER (4 << 20)     /* a burst of read-ahead pages fits */

/* Make a connected peer socket non-blocking, with Nagle off and buffers
 * big enough for a burst of pages. */
int net_prepare(int fd, char *err)
{
    int one = 1, flags = fcntl(fd, F_GETFL), bufsize = SOCKET_BUFFER;
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return dsm_err_sys(err, errno, "fcntl(O_NONBLOCK) on fd %d", fd);
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize) < 0)
        return dsm_err_sys(err, errno, "setsockopt on fd %d", fd);
    return DSM_OK;
}

/* One sendmsg of what is queued, a header and a payload, without blocking.
 * Returns the bytes sent (possibly fewer than asked), 0 if the socket is
 * full, -1 on error. */
ssize_t net_send_frame(int fd, const void *queued, size_t queued_len, const unsigned char *hdr,
                       const void *payload, size_t len)
{
    struct iovec iov[3];
    struct msghdr mh = { .msg_iov = iov };
    ssize_t n;
    if (queued_len)
        iov[mh.msg_iovlen++] = (struct iovec){ (void *)queued, queued_len };
    iov[mh.msg_iovlen++] = (struct iovec){ (void *)hdr, MSG_WIRE_SIZE };
    if (len)
        iov[mh.msg_iovlen++] = (struct iovec){ (void *)payload, len };
    do {
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return n;
}
