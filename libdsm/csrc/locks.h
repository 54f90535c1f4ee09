/* Layer 2: global locks as distributed FIFO queues, after MCS.
 *
 * Lock k has a home, rank k % nranks, which remembers only the tail of
 * its queue: the last rank that asked, and which of its requests that was
 * (each rank numbers its requests for a lock).
 *   acquire   R -ACQ-> home; a free lock is granted at once (GRANT), else
 *             the home tells the old tail its successor: tail -NEXT-> ...
 *   release   the holder hands the lock straight to its successor with
 *             one GRANT, nothing through the home; with no successor known
 *             it tells the home (REL), which frees the lock if the holder
 *             is still the tail, and otherwise knows a NEXT is on its way
 *             to the holder, who then forwards the GRANT.
 * Waiters are served in the order their requests reached the home.
 *
 * Without waiting in the queue:
 *   try       R -TRY-> home: a free lock is granted as for ACQ, a held one
 *             answered BUSY; the queue is not touched.
 *   timeout   an ACQ whose thread stops waiting stays in the queue,
 *             marked abandoned: its GRANT, when it comes, is handed on at
 *             once (to the successor, or REL to the home) with the value it
 *             brought.  An acquire of the same lock on this rank before
 *             then takes the abandoned request over instead of asking again.
 *
 * A lock also carries a value from holder to holder, opaque here: in
 * release mode, the write notices its next holder must apply. */
#ifndef DSM_LOCKS_H
#define DSM_LOCKS_H
#include "mbox.h"
#include "transport.h"

enum lock_state { LOCK_FREE, LOCK_ASKING, LOCK_HELD };

/* This rank's side of one lock (guarded by core.mu). */
/* The value a lock carries (malloc'd, or NULL). */
struct lock_value {
    unsigned char *data;
    uint32_t len;
};

#define LOCK_VALUE_MAX (1u << 20)

struct lock_mine {
    uint8_t state;                  /* LOCK_* */
    int16_t succ;                   /* who gets it when we release, or -1 */
    uint32_t seq;                   /* our latest request */
    uint8_t abandoned;              /* its thread stopped waiting: pass the grant on */
    struct lock_value value;        /* what it brought, or what we gave it */
};

/* The home's side: the tail of the queue (comm thread only). */
struct lock_tail {
    int16_t rank;                   /* -1: the lock is free */
    uint32_t seq;
    struct lock_value value;        /* left by the last holder, for the next */
};

struct locks {
    struct core *c;
    struct transport *t;
    uint32_t n;
    struct lock_mine *mine;
    struct lock_tail *tails;        /* the locks homed here */
    struct mbox mbox;               /* the wake-ups of libdsm.sync, started with the locks */
};

int locks_init(struct locks *l, struct core *c, struct transport *t, uint32_t n, char *err);
void locks_free(struct locks *l);

/* Non-blocking steps, caller holding core.mu: 0 (done; core.mu may have
 * been dropped), TP_FULL (nothing done: another thread of ours is asking,
 * or the ring is full; sleep (core_sleep) and call again), or a DSM_* error
 * with err filled. */
int locks_ask(struct locks *l, uint32_t lock, char *err);
int locks_held(struct locks *l, uint64_t lock);
/* locks_ask with a TRY: the answer is a grant (locks_held) or BUSY. */
int locks_try(struct locks *l, uint32_t lock, char *err);
/* The request this rank made last (after locks_ask or locks_try: the
 * caller's).  A thread waits for its own request, not just any: another
 * thread of its rank may ask once a TRY is answered BUSY. */
uint32_t locks_seq(struct locks *l, uint32_t lock);
/* Is the lock held through request seq? */
int locks_held_by(struct locks *l, uint32_t lock, uint32_t seq);
/* Was TRY seq answered BUSY?  It was once it is over without a grant:
 * this rank is free of the lock, or has asked again since (only the
 * thread a grant is for gives the lock back). */
int locks_busy(struct locks *l, uint32_t lock, uint32_t seq);
/* Stop waiting for our ACQ: its grant is handed on when it comes. */
void locks_abandon(struct locks *l, uint32_t lock);
/* Release, passing `value` (taken over; NULL for none) to the next holder. */
int locks_give(struct locks *l, uint32_t lock, struct lock_value value, char *err);
/* The value the lock brought us (while we hold it). */
struct lock_value locks_value(struct locks *l, uint32_t lock);
/* The blocking calls (acquire, within a time or not; release) are
 * operations of ops.c, made of these steps. */
#endif
