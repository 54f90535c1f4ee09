/* Layer 2: the collectives of the ranks of one host through the control
 * area of their shared memfd (hostmem.h), with no message: barrier, bcast,
 * reduce and gather, the same calls and results as coll.c's.
 *
 * A collective is a run of barrier steps (hostsync.c's host_step).  Before
 * the first, each rank writes its slot header (the call's identity, its
 * length) and the first chunk of its bytes into its data
 * slot; after it, every rank reads every header, so ranks that called
 * different collectives all fail, naming the same two ranks, as coll.c's.
 * Bytes longer than a slot go in further steps, a chunk each.  Headers and
 * data slots come in two sets, by the parity of the step: a rank writes
 * the set of step g + 2 only after step g + 1, which every rank enters
 * once it has read step g's, so one barrier a step is all it takes.
 *
 * A rank that calls finalize() says so in the control area first
 * (dsm_host_finalizing): the collectives it will never join fail, as
 * coll.c's do after its DSM_FINALIZE.
 *
 * A reduce combines in the order of coll.c's recursive doubling, so that
 * floats come out bit for bit as in per-rank mode (each rank computes only
 * the partial results its own result is made of).
 *
 * The ranks of a host are the whole job for now (hostshare.py refuses
 * jobs on several hosts).  With several, a collective would be this local
 * step, then the host's leader (its lowest rank) running coll.c's among
 * the leaders, then a local step handing the result out: host_collective
 * refuses that case instead of guessing. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "coll.h"
#include "hostmem.h"
#include "reduce.h"

/* One collective as this rank runs it. */
struct hc {
    struct hostmem *h;
    struct coll_call call;
    uint64_t slot;                  /* bytes of one data slot */
    uint64_t lens[HOST_MAX_LOCAL];  /* every local rank's length */
    unsigned char *out;             /* the result, or NULL for none here */
    uint64_t out_len;
    int gets;                       /* this rank has a result */
};

static struct host_slot *header(struct hostmem *h, uint32_t gen, int i)
{
    return (struct host_slot *)((char *)h->ctrl + HOST_SLOTS_OFF) +
           (gen & 1) * HOST_MAX_LOCAL + i;
}

static unsigned char *data(const struct hc *x, uint32_t gen, int i)
{
    return (unsigned char *)x->h->ctrl + HOST_DATA_OFF +
           ((gen & 1) * (uint64_t)x->h->nlocal + (uint64_t)i) * x->slot;
}

/* This rank's bytes: the root's for a bcast, nothing for a barrier. */
static uint64_t mine(const struct hc *x)
{
    if (x->call.kind == DSM_COLL_BARRIER ||
        (x->call.kind == DSM_COLL_BCAST && x->call.root != x->h->c->rank))
        return 0;
    return x->call.len;
}

/* Chunk j of `len` bytes: its offset, and its length (0 past the end). */
static uint64_t chunk(const struct hc *x, uint64_t len, uint64_t j, uint64_t *at)
{
    *at = j * x->slot;
    return *at >= len ? 0 : len - *at < x->slot ? len - *at : x->slot;
}

/* ---------------------------------------------------------- reduce */

struct tree {
    const struct hc *x;
    uint32_t gen;
    uint64_t at, n;                 /* the chunk: its offset, its bytes */
    int pow2;
    unsigned char **tmp;            /* one buffer per level */
};

/* coll.h's recursive doubling: what rank q holds after exchange k (0:
 * after taking in rank q + P's), into dst, combined in q's order. */
static void tree_value(const struct tree *t, int q, int k, unsigned char *dst)
{
    const struct coll_call *c = &t->x->call;
    uint64_t count = t->n / reduce_itemsize(c->dtype);
    if (k == 0) {
        memcpy(dst, data(t->x, t->gen, q), t->n);
        if (q + t->pow2 < t->x->h->nlocal)
            reduce_apply(c->dtype, c->op, dst, data(t->x, t->gen, q + t->pow2), count);
        return;
    }
    tree_value(t, q, k - 1, dst);
    tree_value(t, q ^ (1 << (k - 1)), k - 1, t->tmp[k]);
    reduce_apply(c->dtype, c->op, dst, t->tmp[k], count);
}

/* This rank's result for chunk j (step gen) into out. */
static int reduce_chunk(const struct hc *x, uint32_t gen, uint64_t j, char *err)
{
    struct tree t = { .x = x, .gen = gen, .pow2 = 1 };
    int log2 = 0, k, rank = x->call.root == DSM_ROOT_ALL ? x->h->index : x->call.root, rc = 0;
    t.n = chunk(x, x->call.len, j, &t.at);
    while (t.pow2 * 2 <= x->h->nlocal)
        t.pow2 *= 2, log2++;
    if (!(t.tmp = calloc((size_t)log2 + 1, sizeof *t.tmp)))
        return dsm_err_sys(err, ENOMEM, "a host reduce");
    for (k = 1; k <= log2 && !rc; k++)
        if (!(t.tmp[k] = malloc(t.n ? t.n : 1)))
            rc = dsm_err_sys(err, ENOMEM, "a host reduce of %llu bytes",
                             (unsigned long long)t.n);
    if (!rc && t.n)
        tree_value(&t, rank >= t.pow2 ? rank - t.pow2 : rank, log2, x->out + t.at);
    for (k = 1; k <= log2; k++)
        free(t.tmp[k]);
    free(t.tmp);
    return rc;
}

/* ---------------------------------------------------------- the steps */

/* Step gen's chunk j: what this rank takes from the slots. */
static int take(struct hc *x, uint32_t gen, uint64_t j, char *err)
{
    uint64_t at, n, off = 0;
    int i, root = x->call.root;
    if (!x->gets)
        return DSM_OK;
    switch (x->call.kind) {
    case DSM_COLL_BCAST:
        if ((n = chunk(x, x->lens[root], j, &at)))
            memcpy(x->out + at, data(x, gen, root), n);
        return DSM_OK;
    case DSM_COLL_REDUCE:
        return reduce_chunk(x, gen, j, err);
    case DSM_COLL_GATHER:
        for (i = 0; i < x->h->nlocal; off += 8 + x->lens[i], i++)
            if ((n = chunk(x, x->lens[i], j, &at)))
                memcpy(x->out + off + 8 + at, data(x, gen, i), n);
    }
    return DSM_OK;
}

/* After the first step: do the headers agree?  Then the lengths, and the
 * result's buffer. */
static int agree(struct hc *x, uint32_t gen, char *err)
{
    struct host_slot *s;
    struct coll_sig lo, hi, sig;
    int i, lo_rank = 0, hi_rank = 0, n = x->h->nlocal;
    uint64_t total = 0;
    for (i = 0; i < n; i++) {
        s = header(x->h, gen, i);
        sig = (struct coll_sig){ s->what, s->extra };
        if (!i || coll_sig_cmp(&sig, &lo) < 0)
            lo = sig, lo_rank = (int)s->rank;
        if (!i || coll_sig_cmp(&sig, &hi) > 0)
            hi = sig, hi_rank = (int)s->rank;
        x->lens[i] = s->len;
        total += x->call.kind == DSM_COLL_GATHER ? 8 + s->len : 0;
    }
    if (coll_sig_cmp(&lo, &hi)) {
        coll_mismatch(err, DSM_ERRLEN, &lo, lo_rank, &hi, hi_rank);
        return DSM_ECOLL;
    }
    if (x->call.kind == DSM_COLL_BCAST)
        total = x->lens[x->call.root];
    else if (x->call.kind == DSM_COLL_REDUCE)
        total = x->call.len;
    if (!x->gets)
        return DSM_OK;
    if (!(x->out = malloc(total ? total : 1)))
        return dsm_err_sys(err, ENOMEM, "a host collective of %llu bytes",
                           (unsigned long long)total);
    x->out_len = total;
    for (i = 0, total = 0; x->call.kind == DSM_COLL_GATHER && i < n; i++) {
        uint32_t tag[2] = { htole32((uint32_t)i), htole32((uint32_t)x->lens[i]) };
        memcpy(x->out + total, tag, 8);
        total += 8 + x->lens[i];
    }
    return DSM_OK;
}

/* Publish chunk j of this rank's bytes (and, for j = 0, its header) for the
 * next step, then take that step: DSM_OK with *gen its number. */
static int publish(struct hc *x, uint64_t j, uint32_t *gen, char *err)
{
    struct hostmem *h = x->h;
    uint32_t next = __atomic_load_n(&h->ctrl->gen, __ATOMIC_SEQ_CST);
    uint64_t at, n = chunk(x, mine(x), j, &at);
    struct coll_sig sig = coll_identity(&x->call);
    char call[64];
    int rc;
    if (j == 0)
        *header(h, next, h->index) = (struct host_slot){ .what = sig.what,
            .extra = sig.extra, .len = mine(x), .rank = (uint32_t)h->c->rank };
    if (n)
        memcpy(data(x, next, h->index), (const unsigned char *)x->call.data + at, n);
    if ((rc = host_step(h, gen, err)) == DSM_ECOLL)
        dsm_err(err, "rank %d called %s after rank %d called finalize()", h->c->rank,
                coll_describe(call, sizeof call, &sig),
                (int)__atomic_load_n(&h->ctrl->finalized, __ATOMIC_SEQ_CST) - 1);
    return rc;
}

static int run(struct hc *x, char *err)
{
    uint32_t gen;
    uint64_t j, rounds = 1, r;
    int i, rc;
    if ((rc = publish(x, 0, &gen, err)) || (rc = agree(x, gen, err)))
        return rc;
    for (i = 0; i < x->h->nlocal; i++)
        if ((r = (x->lens[i] + x->slot - 1) / x->slot) > rounds)
            rounds = r;
    for (j = 0; j < rounds; j++)
        if ((j && (rc = publish(x, j, &gen, err))) || (rc = take(x, gen, j, err)))
            return rc;
    return DSM_OK;
}

/* ---------------------------------------------------------- the API */

static int checked(struct hostmem *h, const struct coll_call *c, char *err)
{
    int rc, all = c->root == DSM_ROOT_ALL &&
                  (c->kind == DSM_COLL_REDUCE || c->kind == DSM_COLL_GATHER);
    if ((rc = host_running(h, "collectives", err)))
        return rc;
    if (h->nlocal != h->c->nranks) {
        dsm_err(err, "host collectives span the ranks of one host, and this job's %d ranks "
                "are on several", h->c->nranks);
        return DSM_ESTATE;
    }
    if (c->kind < DSM_COLL_BARRIER || c->kind > DSM_COLL_GATHER ||
        ((c->root < 0 || c->root >= h->c->nranks) && !all && c->kind != DSM_COLL_BARRIER) ||
        c->len > DSM_MAX_COLL / 2) {
        dsm_err(err, "collective %d from root %d of %llu bytes: the root must be 0..%d and "
                "the value at most %u bytes", c->kind, c->root, (unsigned long long)c->len,
                h->c->nranks - 1, DSM_MAX_COLL / 2);
        return DSM_EINVAL;
    }
    if (c->kind == DSM_COLL_REDUCE &&
        (!reduce_itemsize(c->dtype) || c->len % reduce_itemsize(c->dtype))) {
        dsm_err(err, "reduce of %llu bytes of element type %d", (unsigned long long)c->len,
                c->dtype);
        return DSM_EINVAL;
    }
    return DSM_OK;
}

int dsm_host_collective(int kind, int root, int op, int dtype, uint64_t sig, const void *src,
                        uint64_t len, void **out, uint64_t *out_len, char *err)
{
    struct hostmem *h = hostmem_get();
    struct hc x;
    uint64_t t0 = now_ns();
    int rc, note;
    *out = NULL;
    *out_len = 0;
    x.h = h;
    x.call = (struct coll_call){ .kind = kind, .root = root, .op = op, .dtype = dtype,
                                 .sig = sig, .data = src, .len = len };
    x.out = NULL;
    x.out_len = 0;
    if ((rc = checked(h, &x.call, err)))
        return rc;
    if (__atomic_exchange_n(&h->busy, 1, __ATOMIC_ACQUIRE)) {
        dsm_err(err, "a collective is already running on rank %d: call collectives from one "
                "thread per rank", h->c->rank);
        return DSM_ESTATE;
    }
    x.slot = ((HOST_CTRL_BYTES - HOST_DATA_OFF) / (2 * (uint64_t)h->nlocal)) & ~63ULL;
    x.gets = kind == DSM_COLL_BCAST ? root != h->c->rank
           : kind != DSM_COLL_BARRIER && (root == DSM_ROOT_ALL || root == h->c->rank);
    note = core_note_wait(h->c, WAIT_COLL, (uint64_t)kind,
                          __atomic_load_n(&h->ctrl->gen, __ATOMIC_RELAXED));
    rc = run(&x, err);
    core_end_wait(h->c, note);
    __atomic_store_n(&h->busy, 0, __ATOMIC_RELEASE);
    if (rc)
        free(x.out);
    else if (x.gets)
        *out = x.out, *out_len = x.out_len;
    __atomic_fetch_add(&h->c->stats.sync_wait_ns, now_ns() - t0, __ATOMIC_RELAXED);
    TRACE_EVENT(h->c, DSM_EV_SYNC, (uint64_t)kind, h->c->rank, 0, t0, now_ns() - t0);
    return rc;
}

void dsm_host_finalizing(void)
{
    struct hostmem *h = hostmem_get();
    uint32_t none = 0;
    if (h && __atomic_compare_exchange_n(&h->ctrl->finalized, &none,
                                         (uint32_t)h->c->rank + 1, 0, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST))
        host_wake(&h->ctrl->gen, INT_MAX);
}

int dsm_host_barrier(char *err)
{
    void *out;
    uint64_t len;
    return dsm_host_collective(DSM_COLL_BARRIER, 0, 0, 0, 0, NULL, 0, &out, &len, err);
}
