/* Layer 2: collectives by recursive doubling (the pattern is in coll.h).
 * The plan of exchanges is a pure function of (rank, N, step).  Whoever
 * holds core.mu when a step can go on takes it: the application thread
 * that begins the collective, or the comm thread when a partner's message
 * arrives.  While an application thread sends (core.mu dropped), the comm
 * thread only keeps what arrives; the sender looks at it when it is back. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "coll.h"
#include "reduce.h"

#define HDR 40                      /* the identities and `has`, before the data */

enum step_kind { ST_SEND, ST_RECV, ST_EXCH, ST_END };

struct step {
    enum step_kind kind;
    int partner;
    uint32_t round;                 /* 0: in from above P; 1+k: exchange k; log2+1: out */
};

/* Step i of the plan of place r in the collective's ranks (partners are
 * places too: rank_at names them). */
static struct step plan(const struct coll *cl, int r, int i)
{
    int n = cl->n, P = cl->pow2, L = cl->log2, extra = r + P < n;
    if (r >= P)
        return i == 0 ? (struct step){ ST_SEND, r - P, 0 }
             : i == 1 ? (struct step){ ST_RECV, r - P, (uint32_t)L + 1 }
                      : (struct step){ ST_END, -1, 0 };
    if (extra && i-- == 0)
        return (struct step){ ST_RECV, r + P, 0 };
    if (i < L)
        return (struct step){ ST_EXCH, r ^ (1 << i), (uint32_t)i + 1 };
    if (extra && i == L)
        return (struct step){ ST_SEND, r + P, (uint32_t)L + 1 };
    return (struct step){ ST_END, -1, 0 };
}

int coll_sig_cmp(const struct coll_sig *a, const struct coll_sig *b)
{
    if (a->what != b->what)
        return a->what < b->what ? -1 : 1;
    return a->extra < b->extra ? -1 : a->extra > b->extra;
}

const char *coll_describe(char *buf, size_t n, const struct coll_sig *s)
{
    static const char *ops[] = { "?", "sum", "prod", "min", "max" };
    int kind = (int)(s->what >> 48), op = (int)(s->what >> 40 & 0xff);
    int root = (int)(s->what & 0xffff);
    const char *all = root == DSM_ROOT_ALL ? "all" : "";
    if (kind == DSM_COLL_BCAST)
        snprintf(buf, n, "bcast(root=%d)", root);
    else if (kind == DSM_COLL_REDUCE && root == DSM_ROOT_ALL)
        snprintf(buf, n, "allreduce(op=%s)", ops[op <= 4 ? op : 0]);
    else if (kind == DSM_COLL_REDUCE)
        snprintf(buf, n, "reduce(op=%s, root=%d)", ops[op <= 4 ? op : 0], root);
    else if (kind == DSM_COLL_GATHER)
        snprintf(buf, n, *all ? "allgather()" : "gather(root=%d)", root);
    else
        snprintf(buf, n, "barrier()");
    return buf;
}

static int rank_at(const struct coll *cl, int place)
{
    return cl->members ? cl->members[place] : place;
}

/* ---------------------------------------------------------- ending */

static void end(struct coll *cl, const char *error)
{
    snprintf(cl->error, sizeof cl->error, "%s", error ? error : "");
    cl->active = 0;
    core_wake(cl->c);
}

void coll_mismatch(char *text, size_t n, const struct coll_sig *lo, int lo_rank,
                   const struct coll_sig *hi, int hi_rank)
{
    char a[64], b[64];
    if (lo->what != hi->what)
        snprintf(text, n, "ranks called different collectives: rank %d called %s, "
                 "rank %d called %s", lo_rank, coll_describe(a, sizeof a, lo), hi_rank,
                 coll_describe(b, sizeof b, hi));
    else
        snprintf(text, n, "ranks %d and %d passed different shapes or types to %s",
                 lo_rank, hi_rank, coll_describe(a, sizeof a, lo));
}

/* Every exchange done: the identities agree, or every rank says so. */
static void finish(struct coll *cl)
{
    char text[DSM_ERRLEN];
    if (!coll_sig_cmp(&cl->lo, &cl->hi)) {
        end(cl, NULL);
        return;
    }
    coll_mismatch(text, sizeof text, &cl->lo, cl->lo_rank, &cl->hi, cl->hi_rank);
    end(cl, text);
}

/* ---------------------------------------------------------- combining */

static void put_sig(unsigned char *p, const struct coll_sig *s)
{
    uint64_t w = htole64(s->what), x = htole64(s->extra);
    memcpy(p, &w, 8);
    memcpy(p + 8, &x, 8);
}

static void get_sig(const unsigned char *p, struct coll_sig *s)
{
    memcpy(&s->what, p, 8);
    memcpy(&s->extra, p + 8, 8);
    s->what = le64toh(s->what);
    s->extra = le64toh(s->extra);
}

/* Is (a, ra) further in direction dir (-1: smaller, 1: larger) than (b, rb)?
 * Between equal identities the lower rank wins, so every rank ends up
 * naming the same two ranks in an error. */
static int before(const struct coll_sig *a, int ra, const struct coll_sig *b, int rb, int dir)
{
    int c = coll_sig_cmp(a, b);
    return c == dir || (c == 0 && ra < rb);
}

/* Take in a partner's state: its identities always; its data if every
 * identity so far agrees.  `final`: it is the whole result (replace). */
static void combine(struct coll *cl, const unsigned char *in, uint64_t len, int final)
{
    struct coll_sig lo, hi;
    uint16_t lo_rank, hi_rank;
    const unsigned char *data = in + HDR;
    uint64_t dlen = len - HDR;
    int has = in[36];
    unsigned char *grown;
    get_sig(in, &lo);
    get_sig(in + 16, &hi);
    memcpy(&lo_rank, in + 32, 2);
    memcpy(&hi_rank, in + 34, 2);
    lo_rank = le16toh(lo_rank);
    hi_rank = le16toh(hi_rank);
    if (final || before(&lo, lo_rank, &cl->lo, cl->lo_rank, -1))
        cl->lo = lo, cl->lo_rank = lo_rank;
    if (final || before(&hi, hi_rank, &cl->hi, cl->hi_rank, 1))
        cl->hi = hi, cl->hi_rank = hi_rank;
    if (coll_sig_cmp(&cl->lo, &cl->hi))
        return;                     /* a mismatch: the data means nothing */
    if (final || (cl->call.kind == DSM_COLL_BCAST && has && !cl->has) ||
        cl->call.kind == DSM_COLL_GATHER) {
        uint64_t keep = final || cl->call.kind == DSM_COLL_BCAST ? 0 : cl->acc_len;
        if (!(grown = realloc(cl->acc, keep + dlen ? keep + dlen : 1))) {
            core_fail(cl->c, "out of memory combining a collective of %llu bytes",
                      (unsigned long long)(keep + dlen));
            return;
        }
        memcpy(grown + keep, data, dlen);
        cl->acc = grown;
        cl->acc_len = keep + dlen;
        cl->has = cl->has || has;
    } else if (cl->call.kind == DSM_COLL_REDUCE && dlen == cl->acc_len &&
               reduce_apply(cl->call.dtype, cl->call.op, cl->acc, data,
                            dlen / reduce_itemsize(cl->call.dtype))) {
        core_fail(cl->c, "reduce of dtype %d with op %d", cl->call.dtype, cl->call.op);
    }
}

/* ---------------------------------------------------------- the steps */

/* Send this rank's state to the partner of a step (caller holds core.mu;
 * an application thread drops it while it sends). */
static void send_state(struct coll *cl, const struct step *st, int from_app)
{
    struct msg m = { .type = DSM_COLL, .origin = (uint16_t)cl->c->rank,
                     .coll = { .epoch = cl->epoch, .round = st->round } };
    unsigned char small[HDR + 256], *buf = small;
    uint16_t lo_rank = htole16(cl->lo_rank), hi_rank = htole16(cl->hi_rank);
    uint64_t dlen = cl->acc && (cl->call.kind != DSM_COLL_BCAST || cl->has) ? cl->acc_len : 0;
    if (HDR + dlen > DSM_MAX_COLL) {
        core_fail(cl->c, "a collective of %llu bytes: at most %u", (unsigned long long)dlen,
                  DSM_MAX_COLL - HDR);
        return;
    }
    if (HDR + dlen > sizeof small && !(buf = malloc(HDR + dlen))) {
        core_fail(cl->c, "out of memory sending a collective of %llu bytes",
                  (unsigned long long)dlen);
        return;
    }
    put_sig(buf, &cl->lo);
    put_sig(buf + 16, &cl->hi);
    memcpy(buf + 32, &lo_rank, 2);
    memcpy(buf + 34, &hi_rank, 2);
    memset(buf + 36, 0, 4);
    buf[36] = (unsigned char)cl->has;
    if (dlen)
        memcpy(buf + HDR, cl->acc, dlen);
    m.len = (uint32_t)(HDR + dlen);
    if (from_app) {
        cl->busy = 1;
        tp_send_app(cl->t, rank_at(cl, st->partner), &m, buf);
        cl->busy = 0;
    } else {
        tp_send(cl->t, rank_at(cl, st->partner), &m, buf);
    }
    if (buf != small)
        free(buf);
}

/* The message of `round` of the collective in progress, if it came. */
static struct coll_early *take_early(struct coll *cl, uint32_t round)
{
    struct coll_early **pp, *e;
    for (pp = &cl->early; (e = *pp); pp = &e->next)
        if (e->epoch == cl->epoch && e->round == round) {
            *pp = e->next;
            return e;
        }
    return NULL;
}

/* Go on with the plan as far as the messages allow (caller holds core.mu). */
static void advance(struct coll *cl, int from_app)
{
    struct coll_early *e;
    struct step st;
    if (cl->busy && !from_app)
        return;                     /* the application thread goes on when back */
    while (cl->active && !core_failed(cl->c)) {
        st = plan(cl, cl->me, cl->step);
        if (st.kind == ST_END) {
            finish(cl);
            return;
        }
        if (st.kind != ST_RECV && !cl->sent) {
            cl->sent = 1;
            send_state(cl, &st, from_app);
        }
        if (st.kind != ST_SEND) {
            if (!(e = take_early(cl, st.round)))
                return;
            combine(cl, e->data, e->len, st.round == (uint32_t)cl->log2 + 1);
            free(e->data);
            free(e);
        }
        cl->step++;
        cl->sent = 0;
    }
}

/* ---------------------------------------------------------- handlers */

static void on_coll(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coll *cl = ctx;
    struct coll_early *e = malloc(sizeof *e), **pp;
    if (m->len < HDR || (!e || !(e->data = malloc(m->len)))) {
        free(e);
        core_fail(cl->c, m->len < HDR ? "protocol error: DSM_COLL from rank %d of %u bytes"
                  : "out of memory keeping DSM_COLL from rank %d (%u bytes)", m->from, m->len);
        return;
    }
    memcpy(e->data, payload, m->len);
    *e = (struct coll_early){ m->coll.epoch, m->coll.round, m->len, e->data, NULL };
    core_lock(cl->c);
    if (m->coll.epoch < cl->epoch || (m->coll.epoch == cl->epoch && !cl->active)) {
        free(e->data);              /* of a collective that already failed here */
        free(e);
    } else {
        for (pp = &cl->early; *pp; pp = &(*pp)->next)
            ;
        *pp = e;
        advance(cl, 0);
    }
    core_unlock(cl->c);
}

/* A rank said DSM_FINALIZE after `epoch` collectives: one past that waits
 * for it in vain, now or later. */
static void on_finalized(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coll *cl = ctx;
    char text[DSM_ERRLEN], a[64];
    if (m->from == cl->c->rank)
        return;
    core_lock(cl->c);
    if (cl->finalized_by < 0 || m->coll.epoch < cl->finalized_after) {
        cl->finalized_by = m->from;
        cl->finalized_after = m->coll.epoch;
    }
    if (cl->active && cl->epoch > cl->finalized_after) {
        snprintf(text, sizeof text, "rank %d called finalize() while rank %d waits in %s",
                 cl->finalized_by, cl->c->rank, coll_describe(a, sizeof a, &cl->mine));
        end(cl, text);
    }
    core_unlock(cl->c);
}

uint64_t coll_count(struct coll *cl)
{
    return cl->epoch;
}

/* ---------------------------------------------------------- application side */

/* The identity of a call: kind, op, dtype and root, then the caller's
 * shape hash (and the size, for a reduce). */
struct coll_sig coll_identity(const struct coll_call *call)
{
    int kind = call->kind, reduce = kind == DSM_COLL_REDUCE;
    struct coll_sig s;
    s.what = (uint64_t)kind << 48 | (uint64_t)(reduce ? call->op : 0) << 40 |
             (uint64_t)(reduce ? call->dtype : 0) << 32 |
             (uint64_t)(kind == DSM_COLL_BARRIER ? 0 : call->root & 0xffff);
    s.extra = reduce ? call->sig * 1000003ULL ^ call->len : call->sig;
    return s;
}

int coll_reduce_among_all(uint64_t len, int nranks)
{
    return (8 + len) * (uint64_t)nranks > COLL_HOST_GATHER;
}

/* This rank's contribution: the root's bytes (bcast), the array (reduce),
 * or (rank, len, bytes) (gather).  0 or -1 (out of memory). */
static int contribute(struct coll *cl, const struct coll_call *call)
{
    uint64_t head = call->kind == DSM_COLL_GATHER ? 8 : 0;
    uint32_t tag[2] = { htole32((uint32_t)cl->c->rank), htole32((uint32_t)call->len) };
    int bcast = call->kind == DSM_COLL_BCAST;
    free(cl->acc);
    cl->acc = NULL;
    cl->acc_len = 0;
    cl->has = bcast && call->root == cl->c->rank;
    if (call->kind == DSM_COLL_BARRIER || (bcast && !cl->has))
        return 0;
    if (!(cl->acc = malloc(head + call->len ? head + call->len : 1)))
        return -1;
    memcpy(cl->acc, tag, head);
    if (call->len)
        memcpy(cl->acc + head, call->data, call->len);
    cl->acc_len = head + call->len;
    return 0;
}

/* The ranks of the next collective: every rank, or the host leaders. */
static void group(struct coll *cl, int leaders)
{
    struct core *c = cl->c;
    cl->n = leaders ? c->nleaders : c->nranks;
    cl->me = leaders ? c->host_of[c->rank] : c->rank;
    cl->members = leaders ? c->leaders : NULL;
    for (cl->pow2 = 1, cl->log2 = 0; cl->pow2 * 2 <= cl->n; cl->pow2 *= 2)
        cl->log2++;
}

int coll_begin(struct coll *cl, const struct coll_call *call, char *err)
{
    char text[DSM_ERRLEN], a[64];
    int rc;
    if ((rc = core_running(cl->c, err)))
        return rc;
    if (cl->active) {
        dsm_err(err, "a collective is already running on rank %d: call collectives from one "
                "thread per rank", cl->c->rank);
        return DSM_ESTATE;
    }
    if (call->kind == DSM_COLL_REDUCE &&
        (!reduce_itemsize(call->dtype) || call->len % reduce_itemsize(call->dtype))) {
        dsm_err(err, "reduce of %llu bytes of element type %d", (unsigned long long)call->len,
                call->dtype);
        return DSM_EINVAL;
    }
    if (contribute(cl, call))
        return dsm_err_sys(err, ENOMEM, "a collective of %llu bytes",
                           (unsigned long long)call->len);
    cl->call = *call;
    cl->epoch++;
    cl->active = 1;
    cl->step = cl->sent = 0;
    group(cl, call->leaders);
    cl->mine = cl->lo = cl->hi = coll_identity(call->before ? call->before : call);
    cl->lo_rank = cl->hi_rank = (uint16_t)cl->c->rank;
    if (call->seed) {
        cl->lo = call->seed->lo, cl->lo_rank = (uint16_t)call->seed->lo_rank;
        cl->hi = call->seed->hi, cl->hi_rank = (uint16_t)call->seed->hi_rank;
    }
    if (cl->finalized_by >= 0 && cl->epoch > cl->finalized_after) {
        snprintf(text, sizeof text, "rank %d called %s after rank %d called finalize()",
                 cl->c->rank, coll_describe(a, sizeof a, &cl->mine), cl->finalized_by);
        end(cl, text);
        return DSM_OK;
    }
    advance(cl, 1);
    return DSM_OK;
}

void coll_skip(struct coll *cl)
{
    cl->epoch++;
}

int coll_ended(struct coll *cl)
{
    return !cl->active;
}

int coll_result(struct coll *cl, void **out, uint64_t *len, char *err)
{
    int gets, root = cl->call.root, kind = cl->call.kind;
    *out = NULL;
    *len = 0;
    if (cl->error[0]) {
        dsm_err(err, "%s", cl->error);
        return DSM_ECOLL;
    }
    gets = kind == DSM_COLL_BCAST ? root != cl->c->rank
         : kind != DSM_COLL_BARRIER && (root == DSM_ROOT_ALL || root == cl->c->rank);
    if (gets) {
        *out = cl->acc ? cl->acc : malloc(1);
        *len = cl->acc_len;
        cl->acc = NULL;
        cl->acc_len = 0;
    }
    return DSM_OK;
}


/* ---------------------------------------------------------- life cycle */

int coll_init(struct coll *cl, struct core *c, struct transport *t, char *err)
{
    memset(cl, 0, sizeof *cl);
    cl->c = c;
    cl->t = t;
    cl->finalized_by = -1;
    group(cl, 0);
    tp_register(t, DSM_COLL, on_coll, cl, DSM_MAX_COLL);
    tp_on_finalized(t, on_finalized, cl);
    (void)err;
    return DSM_OK;
}

void coll_free(struct coll *cl)
{
    while (cl->early) {
        struct coll_early *e = cl->early;
        cl->early = e->next;
        free(e->data);
        free(e);
    }
    free(cl->acc);
    cl->acc = NULL;
}
