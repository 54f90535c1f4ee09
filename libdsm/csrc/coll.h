/* Layer 2: collectives by recursive doubling, run by the comm threads.
 *
 * Every collective is one pattern: with P the largest power of two not
 * above N, the ranks from P up first hand their contribution to rank
 * r - P; ranks below P then exchange with r XOR 2^k for k = 0 .. log2(P)-1,
 * each combining what it has with what it got; last, ranks below N - P
 * send the result on to rank r + P.  That is log2(P) exchanges (two more
 * when N is not a power of two), and every rank ends with the same
 * combination of every rank's contribution:
 *   barrier    nothing;
 *   bcast      the root's bytes (a rank without them takes them);
 *   reduce     typed arrays combined elementwise (sum, prod, min, max);
 *   gather     the (rank, bytes) of every rank, concatenated.
 * Every message also carries the smallest and the largest identity
 * (kind, root, op, type, the caller's shape hash) seen so far, so ranks
 * that called different collectives all learn it, and all fail, instead
 * of hanging.  DSM_FINALIZE says how many collectives its rank made; the
 * collectives past that number fail instead of waiting for it. */
#ifndef DSM_COLL_H
#define DSM_COLL_H
#include "transport.h"

/* What identifies a collective: ranks that disagree on it fail. */
struct coll_sig {
    uint64_t what;                  /* kind, op, dtype, root */
    uint64_t extra;                 /* the caller's shape hash, and sizes */
};

/* The lowest and the highest identity called so far, and by whom. */
struct coll_seed {
    struct coll_sig lo, hi;
    int lo_rank, hi_rank;
};

/* What an application thread asks for. */
struct coll_call {
    int kind, root, op, dtype;      /* DSM_COLL_*, DSM_OP_*, DSM_DT_* */
    uint64_t sig;
    const void *data;
    uint64_t len;
    /* The call a mode's prologue (ops_mode.c) comes before: the prologue's
     * collective checks that call's identity instead of its own, so ranks
     * that called different collectives all fail there, none passing its
     * prologue alone; NULL: its own identity. */
    const struct coll_call *before;
    /* share=host across hosts (hostcoll.c): run among the host leaders only
     * (the other ranks count it with coll_skip), starting from the
     * identities the host's ranks called instead of this rank's own (NULL:
     * its own); the call's root is then a leader. */
    int leaders;
    const struct coll_seed *seed;
};

/* A message that came before this rank was ready for it. */
struct coll_early {
    uint64_t epoch;
    uint32_t round, len;
    unsigned char *data;
    struct coll_early *next;
};

struct coll {
    struct core *c;
    struct transport *t;
    /* guarded by core.mu */
    int n, me;                      /* the ranks of the collective in progress, and our place */
    const uint16_t *members;        /* ... their ranks by place (the leaders), or NULL: all */
    int pow2, log2;                 /* P and log2(P) for n */
    uint64_t epoch;                 /* the collective in progress, or the last one */
    int active;                     /* begun, not yet ended */
    int busy;                       /* an application thread is sending for it */
    int step, sent;                 /* where in the plan; this step's message went out */
    struct coll_call call;
    struct coll_sig mine;           /* this rank's identity of it */
    struct coll_sig lo, hi;         /* smallest and largest identity seen */
    uint16_t lo_rank, hi_rank;      /* ... and whose */
    unsigned char *acc;             /* what this rank has combined so far */
    uint64_t acc_len;
    int has;                        /* bcast: acc holds the root's bytes */
    char error[DSM_ERRLEN];         /* why it failed, or "" */
    int finalized_by;               /* a rank that said DSM_FINALIZE, or -1 */
    uint64_t finalized_after;       /* ... after that many collectives */
    struct coll_early *early;
};

int coll_init(struct coll *cl, struct core *c, struct transport *t, char *err);
/* The number of collectives this rank made, for its DSM_FINALIZE. */
uint64_t coll_count(struct coll *cl);
void coll_free(struct coll *cl);

/* Caller holds core.mu.  Begin a collective: 0, or a DSM_* error (one is
 * in progress on this rank, or the DSM is not running). */
int coll_begin(struct coll *cl, const struct coll_call *call, char *err);
/* Caller holds core.mu.  Count a collective this rank takes part in
 * through its host's leader (hostcoll.c), so that every rank's count, the
 * one its DSM_FINALIZE gives, is the same. */
void coll_skip(struct coll *cl);
/* Has the one begun ended? */
int coll_ended(struct coll *cl);
/* Its outcome: DSM_OK with *out (NULL, or a malloc'd buffer the caller
 * frees) and *len, or DSM_ECOLL with err filled. */
int coll_result(struct coll *cl, void **out, uint64_t *len, char *err);
/* The blocking call, with what comes before it, is ops.c's OP_COLL. */

/* Also for the host's collectives in shared memory (hostcoll.c): a call's
 * identity (kind, op, dtype and root, then the caller's shape hash and,
 * for a reduce, the size); their order (-1, 0, 1); the call as a program
 * wrote it ("bcast(root=0)", into buf); and the error text for ranks
 * lo_rank and hi_rank whose identities lo and hi differ. */
const char *coll_describe(char *buf, size_t n, const struct coll_sig *s);
/* share=host across hosts: does a reduce of len bytes a rank over nranks
 * ranks run among all the ranks (this file's recursive doubling over the
 * connections, after a two-level check of the identities) rather than
 * with the leaders gathering every rank's contribution?  Above
 * COLL_HOST_GATHER bytes gathered (each contribution and its 8-byte tag);
 * the simulator sets a small one, so that its reduces go both ways. */
#ifndef COLL_HOST_GATHER
#define COLL_HOST_GATHER (64u << 10)
#endif
int coll_reduce_among_all(uint64_t len, int nranks);
struct coll_sig coll_identity(const struct coll_call *call);
int coll_sig_cmp(const struct coll_sig *a, const struct coll_sig *b);
void coll_mismatch(char *text, size_t n, const struct coll_sig *lo, int lo_rank,
                   const struct coll_sig *hi, int hi_rank);
#endif
