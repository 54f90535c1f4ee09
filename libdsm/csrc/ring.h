/* Layer 0: the ring, a bounded FIFO of messages that application threads
 * post to their own rank's comm thread: a header and a payload the ring
 * owns (malloc'd, or NULL).  It has no lock of its own: the caller holds
 * the lock that guards it (core.mu). */
#ifndef DSM_RING_H
#define DSM_RING_H
#include "proto.h"

#ifndef DSM_RING_CAP
#define DSM_RING_CAP 1024       /* tests build a tiny one: -DDSM_RING_CAP=2 */
#endif

/* ring_put's answer when there is no room.  It is not an error: the poster
 * waits until the comm thread drains the ring (which calls core_wake) and
 * tries again. */
#define RING_FULL 1

struct ring_item {
    struct msg m;
    unsigned char *payload;
};

struct ring {
    struct ring_item slot[DSM_RING_CAP];
    unsigned head, len;
};

/* 0, or RING_FULL (the payload stays the caller's). */
int ring_put(struct ring *r, const struct msg *m, unsigned char *payload);
/* Move up to `max` messages out, oldest first; sets *was_full if the ring
 * was full before (a poster may be waiting).  Returns how many. */
unsigned ring_take(struct ring *r, struct ring_item *out, unsigned max, int *was_full);
#endif
