/* Layer 2: synchronisation: collectives (barrier, bcast) and global locks.
 *
 * A collective is a round trip to rank 0's comm thread: each rank sends
 * DSM_BARRIER tagged with its epoch and what it called (kind and root);
 * when all have arrived, rank 0 answers DSM_BARRIER_GO.  If the tags
 * differ, or a rank called finalize() meanwhile, the answer carries the
 * error text, so mismatched collectives fail on every rank instead of
 * hanging.
 *
 * Lock k lives with its home rank k % nranks, which keeps the holder and a
 * FIFO of waiting ranks: acquire is one round trip, release one message. */
#ifndef DSM_SYNC_H
#define DSM_SYNC_H
#include "transport.h"

enum coll_kind { COLL_BARRIER = 1, COLL_BCAST };
enum lock_state { LOCK_FREE, LOCK_ASKING, LOCK_HELD };

/* A broadcast value received, waiting for dsm_bcast to take it. */
struct bcast_value {
    uint64_t epoch;
    uint32_t len;
    unsigned char *data;
    struct bcast_value *next;
};

struct lock_waiter {
    uint16_t rank;
    struct lock_waiter *next;
};

struct lock_home {
    int holder;                     /* rank, or -1 */
    struct lock_waiter *head, *tail;
};

/* Rank 0's record of the collective in progress (comm thread only). */
struct coll_root {
    int arrived, finalized_by;
    uint8_t here[DSM_MAX_RANKS], kinds[DSM_MAX_RANKS];
    uint16_t roots[DSM_MAX_RANKS];
    uint64_t epochs[DSM_MAX_RANKS];
};

struct sync {
    struct core *c;
    struct transport *t;
    struct coll_root root;
    /* guarded by core.mu */
    uint64_t coll_seq;              /* collectives this rank started */
    uint64_t coll_done;             /* collectives that completed */
    char coll_error[DSM_ERRLEN];    /* why the last one failed, or "" */
    struct bcast_value *inbox;
    uint32_t nlocks;
    uint8_t *lock_state;            /* LOCK_* of each lock, as this rank sees it */
    struct lock_home *homes;        /* the locks homed here (comm thread only) */
};

int sync_init(struct sync *s, struct core *c, struct transport *t, uint32_t nlocks, char *err);
void sync_free(struct sync *s);

/* Non-blocking steps, caller holding core.mu; each returns 0 (done; core.mu
 * may have been dropped), TP_FULL (nothing done: wait for core.cv and call
 * again) or a DSM_* error with err filled. */
int sync_coll_arrive(struct sync *s, int kind, int root, uint64_t *epoch, char *err);
int sync_coll_reached(struct sync *s, uint64_t epoch);        /* rank 0 answered */
int sync_coll_result(struct sync *s, char *err);              /* DSM_OK or DSM_ECOLL */
int sync_lock_ask(struct sync *s, uint32_t lock, char *err);  /* TP_FULL also while another
                                                               * thread of ours asks */
int sync_lock_held(struct sync *s, uint64_t lock);
int sync_lock_give(struct sync *s, uint32_t lock, char *err);

/* The blocking calls of the API. */
int sync_barrier(struct sync *s, char *err);
int sync_bcast(struct sync *s, int root, const void *data, uint32_t len, void **out,
               uint32_t *out_len, char *err);
int sync_lock_acquire(struct sync *s, uint32_t lock, char *err);
int sync_lock_release(struct sync *s, uint32_t lock, char *err);
#endif
