/* Layer 1: socket helpers.  They move bytes and know no protocol. */
#ifndef DSM_NET_H
#define DSM_NET_H
#include <sys/types.h>

/* Non-blocking, Nagle off, buffers for a burst of pages: DSM_OK or DSM_ESYS. */
int net_prepare(int fd, char *err);
/* One sendmsg of `queued` bytes, then a header, then a payload, without
 * blocking and without copying: the bytes sent (possibly fewer), 0 if the
 * socket is full, -1 on error (errno). */
ssize_t net_send_frame(int fd, const void *queued, size_t queued_len, const unsigned char *hdr,
                       const void *payload, size_t len);
#endif
