/* Layer 2: counted mailboxes, the wake-up under Condition, Event and
 * Semaphore (libdsm/sync.py).
 *
 *   post   R -POST(key)-> S: S's count for `key` goes up by one;
 *   take   a thread of S waits until its count for `key` is above zero,
 *          then takes one.
 * Posts that come before the take are counted, so a wake-up is never
 * lost; the waiting thread sleeps on core.cv (no polling) and the GIL is
 * free meanwhile.  Keys are the caller's: libdsm uses one per thread. */
#ifndef DSM_MBOX_H
#define DSM_MBOX_H
#include "transport.h"

struct mbox_slot {
    uint64_t key;
    uint64_t count;
};

struct mbox {
    struct core *c;
    struct transport *t;
    struct mbox_slot *slots;        /* keys with posts not yet taken (core.mu) */
    size_t n, cap;
};

void mbox_init(struct mbox *b, struct core *c, struct transport *t);
void mbox_free(struct mbox *b);

/* Non-blocking steps, caller holding core.mu.  Send a post: 0,
 * TP_FULL (the ring is full: wait for core.cv and call again) or a DSM_*
 * error with err filled.  Take one post for key: 1, or 0 if none is here. */
int mbox_send(struct mbox *b, int rank, uint64_t key, char *err);
int mbox_take_one(struct mbox *b, uint64_t key);

/* The blocking calls of the API: post one wake-up for `key` to `rank`;
 * take one for `key` here, waiting up to timeout_ms (UINT32_MAX: no
 * limit).  0, DSM_ETIMEDOUT, or DSM_EPEER/DSM_ESTATE with err filled. */
int mbox_post(struct mbox *b, int rank, uint64_t key, char *err);
int mbox_take(struct mbox *b, uint64_t key, uint32_t timeout_ms, char *err);
#endif
