/* Layer 0: the bounded FIFO application threads post to the comm thread. */
#include "ring.h"

int ring_put(struct ring *r, const struct msg *m, unsigned char *payload)
{
    if (r->len == DSM_RING_CAP)
        return RING_FULL;
    r->slot[(r->head + r->len++) % DSM_RING_CAP] = (struct ring_item){ *m, payload };
    return 0;
}

unsigned ring_take(struct ring *r, struct ring_item *out, unsigned max, int *was_full)
{
    unsigned i, n = r->len < max ? r->len : max;
    *was_full = r->len == DSM_RING_CAP;
    for (i = 0; i < n; i++)
        out[i] = r->slot[(r->head + i) % DSM_RING_CAP];
    r->head = (r->head + n) % DSM_RING_CAP;
    r->len -= n;
    return n;
}
