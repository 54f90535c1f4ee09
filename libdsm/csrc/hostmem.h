/* Layer 1: host-shared memory: the one memfd the ranks of a host map
 * (DSM_SHARE=host), and the control area after the region in it that the
 * ranks synchronise through: the barrier (hostsync.c), the locks
 * (hostlock.c), the mailboxes (hostmbox.c) and the collectives' slots
 * (hostcoll.c).  Pages of the
 * memfd cost memory only once touched, so the area is large. */
#ifndef DSM_HOSTMEM_H
#define DSM_HOSTMEM_H
#include "ground.h"

/* The control area, in the memfd right after the region:
 *   0               struct host_ctrl, the barrier's counts
 *   HOST_LOCKS_OFF  HOST_LOCKS struct host_lock, one per lock id below that
 *   HOST_SLOTS_OFF  2 x HOST_MAX_LOCAL struct host_slot: a collective's
 *                   header per rank, by the parity of the barrier step
 *   HOST_MBOX_OFF   HOST_MAX_LOCAL struct host_mbox, one per rank
 *   HOST_DATA_OFF   the collectives' data: 2 x nlocal slots of equal size,
 *                   by parity and local rank, to the end of the area */
#define HOST_CTRL_BYTES ((uint64_t)DSM_HOST_CTRL_BYTES)
#define HOST_LOCKS ((uint32_t)DSM_HOST_LOCKS)
#define HOST_MAX_LOCAL 1024
#define HOST_LOCKS_OFF 4096u
#define HOST_SLOTS_OFF (HOST_LOCKS_OFF + DSM_HOST_LOCKS * 8u)
#define HOST_MBOX_OFF (HOST_SLOTS_OFF + 2u * HOST_MAX_LOCAL * 64u)
#define HOST_MBOX_SLOTS 62
#define HOST_DATA_OFF (HOST_MBOX_OFF + HOST_MAX_LOCAL * 1024u)

/* After the control area, with share=host on several hosts: one 64-bit
 * word per page of the region, the host's copy of it (coh_host.c), changed
 * by compare-and-swap only:
 *   HOST_WORD_SET    set at the first change; a word of 0 is the initial
 *                    state: read/write for the pages the host homes
 *                    (mapped by its leader only: the others map them at
 *                    their first touch), else no access
 *   bits 61..62      the host's access (DSM_PROT_*): its leader holds the
 *                    page so, and no rank of the host maps it higher
 *   HOST_OVERFLOW    some rank beyond the first HOST_RANK_BITS of the host
 *                    (its leader aside) may map the page: set by such a
 *                    rank as the others set their own bit, and cleared
 *                    only by a lowering to no access, which asks every
 *                    rank beyond them to drop the page
 *   the bits below   the host's ranks 1..HOST_RANK_BITS (their place among
 *                    the host's ranks, the leader's being 0) that have
 *                    the page mapped, bit i - 1 for rank i (host_bit)
 * So a host may have any number of ranks.  The simulator builds with a
 * small DSM_HOST_RANK_BITS, so that its hosts have ranks beyond the bits. */
#ifndef DSM_HOST_RANK_BITS
#define DSM_HOST_RANK_BITS 60
#endif
_Static_assert(DSM_HOST_RANK_BITS >= 1 && DSM_HOST_RANK_BITS <= 60,
               "the ranks' bits and HOST_OVERFLOW lie below the access (bit 61)");
#define HOST_WORD_SET (1ULL << 63)
#define HOST_ACCESS_SHIFT 61
#define HOST_RANK_BITS DSM_HOST_RANK_BITS
#define HOST_OVERFLOW (1ULL << HOST_RANK_BITS)
#define HOST_MAPPERS ((HOST_OVERFLOW << 1) - 1)

/* The bit in a page's word of the host's rank of place `index` (>= 1). */
static inline uint64_t host_bit(int index)
{
    return index <= HOST_RANK_BITS ? 1ULL << (index - 1) : HOST_OVERFLOW;
}

/* Every field below is touched with atomics only: the ranks of the host
 * are separate processes. */
struct host_ctrl {
    uint32_t arrived;           /* ranks in the current barrier */
    uint32_t gen;               /* barriers completed: the futex word */
    uint32_t sleepers;          /* ranks asleep on gen: a wake is a syscall only then */
    uint32_t finalized;         /* 1 + the first rank that called finalize(), or 0 */
};

/* A lock: word 0 free, 1 held, 2 held with sleepers (the futex word). */
struct host_lock {
    uint32_t word;
    int32_t owner;              /* the holding rank + 1, or 0 */
};

/* What a rank calls in the collective of one barrier step (hostcoll.c). */
struct host_slot {
    uint64_t what, extra;       /* the call's identity, as coll.c's */
    uint64_t len;               /* its bytes */
    uint32_t rank;
    uint32_t pad[9];            /* to 64 bytes: one cache line each */
};
/* A rank's counted mailbox (mbox.h's, through memory): the keys with
 * posts not yet taken, changed under `lock` (a futex mutex, as a host
 * lock's word) by the posting ranks and this one.  seq counts the posts:
 * the takers' futex word; freed counts the slots freed: the futex word of
 * posters that found every slot taken. */
struct host_mbox {
    uint32_t lock;
    uint32_t seq;
    uint32_t sleepers;          /* takers asleep on seq: a wake is a syscall only then */
    uint32_t n;                 /* slots in use, the first n */
    uint32_t freed;
    uint32_t full_sleepers;     /* posters asleep on freed */
    uint32_t pad[2];
    struct host_mbox_slot {
        uint64_t key, count;
    } slots[HOST_MBOX_SLOTS];
};
_Static_assert(sizeof(struct host_lock) == 8 && sizeof(struct host_slot) == 64 &&
               sizeof(struct host_mbox) == 1024,
               "the control area's layout (HOST_SLOTS_OFF, HOST_DATA_OFF) counts on these sizes");

struct coll_call;

/* The attachment of this process (one per process, like api.c's core). */
struct hostmem {
    int memfd;                  /* attached and not yet taken by the region; else -1 */
    int nlocal, index;          /* ranks on this host, and this rank's place among them */
    struct core *c;             /* the core whose region took the memfd */
    struct host_ctrl *ctrl;     /* mapped once the region took the memfd */
    int busy;                   /* a collective is running (hostcoll.c) */
    int nhosts;                 /* hosts of the job (dsm_host_attach) */
    uint64_t *state;            /* the page states, mapped when nhosts > 1 */
    uint64_t state_bytes;
    /* Across hosts in sequential mode (registered by api.c at start; NULL:
     * host collectives are refused): the leaders' level of a host
     * collective (hostcoll.c), from the application thread running it.
     * join 1: run coll.c's collective `call`, *out its result (malloc'd,
     * or NULL): a leader among the leaders (call->leaders), or any rank
     * among all the ranks (a large reduce); join 0: only count it (a rank
     * that takes part through its leader).  DSM_OK, or the error with err
     * filled. */
    int (*across)(const struct coll_call *call, int join, void **out, uint64_t *len,
                  char *err);
};

/* The attachment, or NULL in per-rank mode (nothing attached). */
struct hostmem *hostmem_get(void);
/* Before region_map: the hosts of the job, as attached (0: nothing attached). */
int hostmem_hosts(void);
/* For region_map: *fd becomes the attached memfd, now the caller's, with
 * the control area at `size` mapped, and with several hosts the page
 * states after it (c->host_state); -1 in per-rank mode.  DSM_OK, or the
 * error with err filled (a memfd of the wrong size, a failed mmap). */
int hostmem_claim(struct core *c, uint64_t size, int *fd, char *err);
/* After the region is unmapped: the control area too. */
void hostmem_release(void);

/* hostsync.c, for the barrier, the collectives and the locks. */
/* One barrier step of the host's ranks: DSM_OK, DSM_EPEER with err
 * filled once the job failed, or DSM_ECOLL (err not filled) when a rank
 * called finalize() instead.  *gen: the step's number (before it). */
int host_step(struct hostmem *h, uint32_t *gen, char *err);
/* Wait while *word == seen: spin, yield, then sleep on the futex in
 * FAIL_POLL_NS slices until `deadline` (now_ns; 0: none).  DSM_OK once it
 * changed (or may have), DSM_ETIMEDOUT, DSM_EPEER once the job failed, or
 * DSM_ECOLL once *stop (or NULL) is nonzero and *word still seen.
 * *sleepers (or NULL) counts this rank while it sleeps. */
int host_wait_word(struct hostmem *h, uint32_t *word, uint32_t seen, uint32_t *sleepers,
                   const uint32_t *stop, uint64_t deadline, char *err);
void host_wake(uint32_t *word, int n);
/* After bumping *word (seq_cst): wake every waiter if *sleepers counts any
 * (host_wait_word counts a sleeper before its futex checks the word, so
 * one of the two sees the other). */
void host_wake_sleepers(uint32_t *word, uint32_t *sleepers);
/* A futex mutex in the area (0 free, 1 held, 2 held and maybe slept on):
 * take it, waiting until `deadline` as host_wait_word (timeout_ms 0: a
 * try only): DSM_OK, DSM_ETIMEDOUT (err not filled), or DSM_EPEER; give it
 * back, waking a sleeper. */
int host_mutex_take(struct hostmem *h, uint32_t *word, uint32_t timeout_ms, char *err);
void host_mutex_give(uint32_t *word);
/* The checks of every host entry point: DSM_OK, else DSM_ESTATE with err
 * filled (not in host-shared mode, or not running). */
int host_running(struct hostmem *h, const char *what, char *err);
#endif
