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
 * Across hosts (share=host on several, sequential mode) a collective has
 * two levels.  In: the host's ranks gather what they bring at their
 * leader (the host's lowest rank) through the slots, and the identities
 * they called, lowest and highest.  Between: the leaders alone run coll.c's
 * collective over their connections (hostmem's `across`, registered by
 * api.c), starting from those identities, so that a mismatch anywhere
 * fails on every host, naming the same two ranks as per-rank mode.  Out:
 * the leader hands the outcome (an error, or the bytes) to its host's
 * ranks through the slots.  A small reduce moves every rank's contribution
 * (the leaders gather them) and each rank combines them in per-rank mode's
 * order over the whole job.  A large one (coll_reduce_among_all: the same
 * answer on every rank, from the call's size and the job's ranks) brings
 * no bytes: the two levels only check that every rank called it, then
 * every rank runs coll.c's reduce among all the ranks over the
 * connections, per-rank mode's own.  Every rank counts each collective
 * once in coll.c (a leader by running it), the large reduce's two (the
 * check, the reduce), so the count a DSM_FINALIZE gives is the same on
 * every rank. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "coll.h"
#include "hostmem.h"
#include "reduce.h"

enum { CHECK_NONE, CHECK_FAIL, CHECK_NOTE };    /* what a step does with the identities */

/* One local run of steps as this rank runs it: the collective itself (one
 * host), or one level of it (across hosts). */
struct hc {
    struct hostmem *h;
    struct coll_call call;          /* the caller's: its identity, its kind for a reduce */
    int pattern;                    /* what the slots do: a DSM_COLL_* kind */
    int from;                       /* BCAST: the place among the host's ranks whose bytes go */
    const unsigned char *src;       /* the bytes this rank brings */
    uint64_t src_len;
    int check;                      /* CHECK_*: compare the identities, failing or noting */
    struct coll_seed seed;          /* CHECK_NOTE: the lowest and highest identity called */
    uint64_t slot;                  /* bytes of one data slot */
    uint64_t lens[HOST_MAX_LOCAL];  /* every local rank's length */
    unsigned char *out;             /* the result, or NULL for none here */
    uint64_t out_len;
    int gets;                       /* this rank has a result */
    int among_all;                  /* across hosts: a reduce run among all the ranks */
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

/* The rank at place i among the host's ranks. */
static int local_rank(const struct hostmem *h, int i)
{
    return h->c->nleaders ? h->c->locals[i] : i;
}

/* Chunk j of `len` bytes: its offset, and its length (0 past the end). */
static uint64_t chunk(const struct hc *x, uint64_t len, uint64_t j, uint64_t *at)
{
    *at = j * x->slot;
    return *at >= len ? 0 : len - *at < x->slot ? len - *at : x->slot;
}

/* ---------------------------------------------------------- reduce */

struct tree {
    const unsigned char *const *part;   /* each rank's contribution: `bytes` of it */
    int n, pow2, dtype, op;
    uint64_t bytes;
    unsigned char **tmp;            /* one buffer per level */
};

/* coll.h's recursive doubling: what rank q holds after exchange k (0:
 * after taking in rank q + P's), into dst, combined in q's order. */
static void tree_value(const struct tree *t, int q, int k, unsigned char *dst)
{
    uint64_t count = t->bytes / reduce_itemsize(t->dtype);
    if (k == 0) {
        memcpy(dst, t->part[q], t->bytes);
        if (q + t->pow2 < t->n)
            reduce_apply(t->dtype, t->op, dst, t->part[q + t->pow2], count);
        return;
    }
    tree_value(t, q, k - 1, dst);
    tree_value(t, q ^ (1 << (k - 1)), k - 1, t->tmp[k]);
    reduce_apply(t->dtype, t->op, dst, t->tmp[k], count);
}

/* Rank `rank`'s result of reducing part[0 .. n) (`bytes` each) with the
 * call's op, as coll.c's recursive doubling over n ranks gives it, into dst. */
static int tree_reduce(const struct coll_call *c, const unsigned char *const *part, int n,
                       int rank, uint64_t bytes, unsigned char *dst, char *err)
{
    struct tree t = { .part = part, .n = n, .pow2 = 1, .dtype = c->dtype, .op = c->op,
                      .bytes = bytes };
    int log2 = 0, k, rc = 0;
    while (t.pow2 * 2 <= n)
        t.pow2 *= 2, log2++;
    if (!(t.tmp = calloc((size_t)log2 + 1, sizeof *t.tmp)))
        return dsm_err_sys(err, ENOMEM, "a host reduce");
    for (k = 1; k <= log2 && !rc; k++)
        if (!(t.tmp[k] = malloc(bytes ? bytes : 1)))
            rc = dsm_err_sys(err, ENOMEM, "a host reduce of %llu bytes",
                             (unsigned long long)bytes);
    if (!rc && bytes)
        tree_value(&t, rank >= t.pow2 ? rank - t.pow2 : rank, log2, dst);
    for (k = 1; k <= log2; k++)
        free(t.tmp[k]);
    free(t.tmp);
    return rc;
}

/* This rank's result for chunk j (step gen) into out: one host. */
static int reduce_chunk(const struct hc *x, uint32_t gen, uint64_t j, char *err)
{
    const unsigned char *part[HOST_MAX_LOCAL];
    uint64_t at, n = chunk(x, x->call.len, j, &at);
    int i, rank = x->call.root == DSM_ROOT_ALL ? x->h->index : x->call.root;
    for (i = 0; i < x->h->nlocal; i++)
        part[i] = data(x, gen, i);
    return tree_reduce(&x->call, part, x->h->nlocal, rank, n, x->out + at, err);
}

/* ---------------------------------------------------------- the steps */

/* Step gen's chunk j: what this rank takes from the slots. */
static int take(struct hc *x, uint32_t gen, uint64_t j, char *err)
{
    uint64_t at, n, off = 0;
    int i;
    if (!x->gets)
        return DSM_OK;
    switch (x->pattern) {
    case DSM_COLL_BCAST:
        if ((n = chunk(x, x->lens[x->from], j, &at)))
            memcpy(x->out + at, data(x, gen, x->from), n);
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

/* After the first step: do the headers agree (x->check)?  Then the
 * lengths, and the result's buffer. */
static int agree(struct hc *x, uint32_t gen, char *err)
{
    struct host_slot *s;
    struct coll_seed *d = &x->seed;
    struct coll_sig sig;
    int i, n = x->h->nlocal;
    uint64_t total = 0;
    for (i = 0; i < n; i++) {
        s = header(x->h, gen, i);
        sig = (struct coll_sig){ s->what, s->extra };
        if (!i || coll_sig_cmp(&sig, &d->lo) < 0)
            d->lo = sig, d->lo_rank = (int)s->rank;
        if (!i || coll_sig_cmp(&sig, &d->hi) > 0)
            d->hi = sig, d->hi_rank = (int)s->rank;
        x->lens[i] = s->len;
        total += x->pattern == DSM_COLL_GATHER ? 8 + s->len : 0;
    }
    if (x->check == CHECK_FAIL && coll_sig_cmp(&d->lo, &d->hi)) {
        coll_mismatch(err, DSM_ERRLEN, &d->lo, d->lo_rank, &d->hi, d->hi_rank);
        return DSM_ECOLL;
    }
    if (x->pattern == DSM_COLL_BCAST)
        total = x->lens[x->from];
    else if (x->pattern == DSM_COLL_REDUCE)
        total = x->call.len;
    if (!x->gets)
        return DSM_OK;
    if (!(x->out = malloc(total ? total : 1)))
        return dsm_err_sys(err, ENOMEM, "a host collective of %llu bytes",
                           (unsigned long long)total);
    x->out_len = total;
    for (i = 0, total = 0; x->pattern == DSM_COLL_GATHER && i < n; i++) {
        uint32_t tag[2] = { htole32((uint32_t)local_rank(x->h, i)),
                            htole32((uint32_t)x->lens[i]) };
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
    uint64_t at, n = chunk(x, x->src_len, j, &at);
    struct coll_sig sig = coll_identity(&x->call);
    char call[64];
    int rc;
    if (j == 0)
        *header(h, next, h->index) = (struct host_slot){ .what = sig.what,
            .extra = sig.extra, .len = x->src_len, .rank = (uint32_t)h->c->rank };
    if (n)
        memcpy(data(x, next, h->index), x->src + at, n);
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

/* A local run of steps of the pattern for the call, this rank bringing
 * src (len bytes), the result (if it gets one) into x->out. */
static int level(struct hc *x, int pattern, int from, int gets, int check, const void *src,
                 uint64_t len, char *err)
{
    x->pattern = pattern;
    x->from = from;
    x->gets = gets;
    x->check = check;
    x->src = src;
    x->src_len = len;
    x->out = NULL;
    x->out_len = 0;
    return run(x, err);
}

/* ---------------------------------------------------------- across hosts */

/* The bytes of this rank's call (the root's for a bcast, none for a barrier). */
static uint64_t mine(const struct coll_call *c, int rank)
{
    if (c->kind == DSM_COLL_BARRIER || (c->kind == DSM_COLL_BCAST && c->root != rank))
        return 0;
    return c->len;
}

/* Does `rank` get a result of the call? */
static int gets(const struct coll_call *c, int rank)
{
    return c->kind == DSM_COLL_BCAST ? c->root != rank
         : c->kind != DSM_COLL_BARRIER && (c->root == DSM_ROOT_ALL || c->root == rank);
}

/* What the leader hands its host's ranks: the outcome, then the bytes. */
struct outcome {
    int32_t rc;
    uint32_t text;                  /* bytes of the error's text after this */
};

/* The leader's step between hosts, with its host's gathered contributions
 * in (x->out, from level In): the outcome to hand out, malloc'd, into *b. */
static int between(struct hc *x, unsigned char **b, uint64_t *blen, char *err)
{
    const struct coll_call *c = &x->call;
    struct core *core = x->h->c;
    /* a reduce's contributions are gathered, each rank combining them; a
     * reduce among all the ranks is only checked here, as a barrier */
    struct coll_call lc = { .kind = c->kind != DSM_COLL_REDUCE ? c->kind
                                  : x->among_all ? DSM_COLL_BARRIER : DSM_COLL_GATHER,
                            .root = c->root, .before = c, .leaders = 1, .seed = &x->seed };
    struct outcome o = { 0, 0 };
    unsigned char *got = NULL, *p;
    uint64_t got_len = 0, at, payload = 0;
    uint32_t tag[2];
    if (c->root != DSM_ROOT_ALL && c->kind != DSM_COLL_BARRIER)
        lc.root = core->leader_of[c->root];
    if (c->kind == DSM_COLL_BCAST && core->leader_of[c->root] == core->rank) {
        for (at = 0; at < x->out_len; at += 8 + tag[1]) {
            memcpy(tag, x->out + at, 8);
            tag[1] = le32toh(tag[1]);
            if (le32toh(tag[0]) == (uint32_t)c->root)
                lc.data = x->out + at + 8, lc.len = tag[1];
        }
    } else if (lc.kind == DSM_COLL_GATHER) {
        lc.data = x->out, lc.len = x->out_len;
    }
    o.rc = x->h->across(&lc, 1, (void **)&got, &got_len, err);
    if (o.rc)
        o.text = (uint32_t)strlen(err) + 1;
    else if (c->kind == DSM_COLL_BCAST && lc.data && got_len == 0)
        payload = lc.len;           /* the root's host: its own bytes */
    else
        payload = got_len;
    if (!(*b = p = malloc(sizeof o + o.text + payload))) {
        free(got);
        return dsm_err_sys(err, ENOMEM, "a host collective of %llu bytes",
                           (unsigned long long)payload);
    }
    memcpy(p, &o, sizeof o);
    memcpy(p + sizeof o, err, o.text);
    p += sizeof o + o.text;
    if (c->kind == DSM_COLL_BCAST && !o.rc && got_len == 0 && payload)
        memcpy(p, lc.data, payload);
    else if (lc.kind == DSM_COLL_GATHER) {
        /* the leaders' entries (leader, its host's entries): the hosts' entries */
        for (at = 0; at < got_len; at += 8 + tag[1]) {
            memcpy(tag, got + at, 8);
            tag[1] = le32toh(tag[1]);
            memcpy(p, got + at + 8, tag[1]);
            p += tag[1];
        }
        payload = (uint64_t)(p - (*b + sizeof o + o.text));
    } else if (payload)
        memcpy(p, got, payload);
    *blen = sizeof o + o.text + payload;
    free(got);
    return DSM_OK;
}

/* This rank's result from the outcome's bytes (every rank's entries for a
 * reduce: combined here, in per-rank mode's order); or, for a reduce among
 * all the ranks, from coll.c's reduce, which every rank joins. */
static int result(struct hc *x, const unsigned char *bytes, uint64_t len, char *err)
{
    const struct coll_call *c = &x->call;
    const unsigned char **part;
    uint64_t at;
    uint32_t tag[2];
    int rc, n = x->h->c->nranks;
    x->out = NULL;
    x->out_len = 0;
    if (x->among_all)
        return x->h->across(c, 1, (void **)&x->out, &x->out_len, err);
    if (!gets(c, x->h->c->rank))
        return DSM_OK;
    if (c->kind != DSM_COLL_REDUCE) {
        if (!(x->out = malloc(len ? len : 1)))
            return dsm_err_sys(err, ENOMEM, "a host collective of %llu bytes",
                               (unsigned long long)len);
        memcpy(x->out, bytes, len);
        x->out_len = len;
        return DSM_OK;
    }
    if (!(part = calloc((size_t)n, sizeof *part)) || !(x->out = malloc(c->len ? c->len : 1))) {
        free(part);
        return dsm_err_sys(err, ENOMEM, "a host reduce of %d x %llu bytes", n,
                           (unsigned long long)c->len);
    }
    for (at = 0; at + 8 <= len; at += 8 + tag[1]) {
        memcpy(tag, bytes + at, 8);
        tag[0] = le32toh(tag[0]), tag[1] = le32toh(tag[1]);
        if (tag[0] < (uint32_t)n && tag[1] == c->len)
            part[tag[0]] = bytes + at + 8;
    }
    for (rc = 0; rc < n && part[rc]; rc++)
        ;
    if (rc < n) {
        dsm_err(err, "a host reduce: rank %d's contribution of %llu bytes is missing", rc,
                (unsigned long long)c->len);
        rc = DSM_EPEER;
    } else {
        rc = tree_reduce(c, part, n, c->root == DSM_ROOT_ALL ? x->h->c->rank : c->root,
                         c->len, x->out, err);
    }
    free(part);
    if (!rc)
        x->out_len = c->len;
    return rc;
}

/* The collective in two levels (share=host across hosts). */
static int two_levels(struct hc *x, char *err)
{
    struct hostmem *h = x->h;
    const struct coll_call *c = &x->call;
    int leader = h->index == 0, rc;
    unsigned char *b = NULL, *none;
    uint64_t blen = 0, nlen;
    struct outcome o;
    /* In: what the host's ranks bring (nothing for a reduce among all), at the leader */
    x->among_all = c->kind == DSM_COLL_REDUCE && coll_reduce_among_all(c->len, h->c->nranks);
    rc = level(x, DSM_COLL_GATHER, 0, leader, CHECK_NOTE, c->data,
               x->among_all ? 0 : mine(c, h->c->rank), err);
    if (rc || !leader) {
        free(x->out);
        h->across(c, 0, (void **)&none, &nlen, err);        /* count it */
        if (rc)
            return rc;
    } else {
        rc = between(x, &b, &blen, err);
        free(x->out);
        if (rc)
            return rc;
    }
    /* Out: the leader's outcome to every rank of the host */
    if ((rc = level(x, DSM_COLL_BCAST, 0, !leader, CHECK_NONE, b, blen, err))) {
        free(b);
        return rc;
    }
    if (!leader)
        b = x->out, blen = x->out_len;
    x->out = NULL;
    memcpy(&o, b, sizeof o);
    if (o.rc) {
        dsm_err(err, "%s", (const char *)b + sizeof o);
        rc = o.rc;
    } else {
        rc = result(x, b + sizeof o + o.text, blen - sizeof o - o.text, err);
    }
    free(b);
    return rc;
}

/* ---------------------------------------------------------- the API */

static int checked(struct hostmem *h, const struct coll_call *c, char *err)
{
    int rc, all = c->root == DSM_ROOT_ALL &&
                  (c->kind == DSM_COLL_REDUCE || c->kind == DSM_COLL_GATHER);
    if ((rc = host_running(h, "collectives", err)))
        return rc;
    if (h->nhosts > 1 && !h->across) {
        dsm_err(err, "host collectives across hosts run in sequential mode only (in release "
                "mode they go over the connections)");
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
    x.among_all = 0;
    if ((rc = checked(h, &x.call, err)))
        return rc;
    if (__atomic_exchange_n(&h->busy, 1, __ATOMIC_ACQUIRE)) {
        dsm_err(err, "a collective is already running on rank %d: call collectives from one "
                "thread per rank", h->c->rank);
        return DSM_ESTATE;
    }
    x.slot = ((HOST_CTRL_BYTES - HOST_DATA_OFF) / (2 * (uint64_t)h->nlocal)) & ~63ULL;
    note = core_note_wait(h->c, WAIT_COLL, (uint64_t)kind,
                          __atomic_load_n(&h->ctrl->gen, __ATOMIC_RELAXED));
    rc = h->nhosts > 1 ? two_levels(&x, err)
       : level(&x, kind, root, gets(&x.call, h->c->rank), CHECK_FAIL, src,
               mine(&x.call, h->c->rank), err);
    core_end_wait(h->c, note);
    __atomic_store_n(&h->busy, 0, __ATOMIC_RELEASE);
    if (rc)
        free(x.out);
    else if (gets(&x.call, h->c->rank))
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
