/* The simulated ranks of simcommrun.c: channels, the comm thread's round
 * (comm.c's round_of_events over commstep.c's decisions) and the
 * application threads' waits for replies (core_spin with app_poll, then
 * core_sleep), each a step at a time. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "simcomm.h"

static const char *mnames[] = { "request", "reply", "heartbeat", "finalize", "end of stream" };

uint64_t below(uint64_t n)
{
    S.rng ^= S.rng << 13;
    S.rng ^= S.rng >> 7;
    S.rng ^= S.rng << 17;
    return n ? S.rng % n : 0;
}

uint64_t sim_clock(void)
{
    return S.now;
}

void say(const char *fmt, ...)
{
    va_list ap;
    if (!S.tracing)
        return;
    printf("%9.3f us  ", (double)S.now / 1e3);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

void violate(const char *fmt, ...)
{
    va_list ap;
    if (S.violation[0])
        return;
    va_start(ap, fmt);
    vsnprintf(S.violation, sizeof S.violation, fmt, ap);
    va_end(ap);
}

/* How late rank r's comm thread may wake. */
uint64_t late_max(int r)
{
    return S.r[r].slow || S.loaded ? SLOW_LATE : LATE;
}

int gone(int r)
{
    return S.r[r].ended || S.r[r].stopped;
}

/* ---------------------------------------------------------- channels */

static void push(int src, int dst, enum mtype type, int thread, uint32_t seq)
{
    struct smsg *m = calloc(1, sizeof *m), *t = S.tail[src][dst];
    uint64_t lat = S.r[src].slow ? SLOW_LAT : LAT;
    m->type = type;
    m->thread = thread;
    m->seq = seq;
    m->at = S.now + below(lat + 1);
    if (t && t->at > m->at)
        m->at = t->at;              /* FIFO */
    if (t)
        t->next = m;
    else
        S.head[src][dst] = m;
    S.tail[src][dst] = m;
}

static struct smsg *pop(int src, int dst)
{
    struct smsg *m = S.head[src][dst];
    if (!m || m->at > S.now)
        return NULL;
    if (!(S.head[src][dst] = m->next))
        S.tail[src][dst] = NULL;
    return m;
}

/* The process of rank r is gone: the peers read an end of stream. */
void end_rank(int r, const char *why)
{
    int q;
    say("rank %d ends: %s", r, why);
    S.r[r].ended = 1;
    for (q = 0; q < S.n; q++)
        if (q != r && !S.r[r].shut[q])
            push(r, q, M_EOF, 0, 0);
}

/* peer_lost: blame rank q, record the failure (no lock), wake the waiters. */
static void lost(int r, int q, const char *how)
{
    struct srank *sr = &S.r[r];
    say("rank %d loses rank %d (%s)", r, q, how);
    if (!core_failed(&sr->core)) {
        sr->failed_at = S.now;
        sr->silent_verdict = how[0] == 's';
        sr->exit_at = S.now + below(FENCE / 2);
        sr->stuck = !below(3);
    }
    core_fail_peer(&sr->core, q, "rank %d lost (%s)", q, how);
}

/* peer_send: fails on a connection closed either way, or reset. */
void send_to(int r, int q, enum mtype type, int thread, uint32_t seq)
{
    struct srank *sr = &S.r[r];
    if (sr->eof[q] || sr->shut[q]) {
        lost(r, q, "closed");
        return;
    }
    if (S.fate == F_RESET && q == S.faulty && !S.r[q].ended && !--S.resets_left)
        end_rank(q, "connection reset");
    if (S.fate == F_RESET && q == S.faulty && S.r[q].ended) {
        lost(r, q, "closed");
        return;
    }
    sr->last_tx[q] = S.now;
    say("rank %d sends a %s to rank %d", r, mnames[type], q);
    if (!S.r[q].ended)
        push(r, q, type, thread, seq);
}

/* ---------------------------------------------------------- receiving */

static void deliver(int r, int src, struct smsg *m)
{
    struct srank *sr = &S.r[r];
    say("rank %d reads a %s from rank %d (sent to arrive at %.3f us)", r, mnames[m->type], src,
        (double)m->at / 1e3);
    if (m->type == M_EOF) {
        sr->eof[src] = 1;
        if (live_eof_lost(sr->finalized[src], sr->self_finalized))
            lost(r, src, "closed");
        return;
    }
    sr->last_rx[src] = S.now;
    if (m->type == M_REQ) {
        send_to(r, src, M_REP, m->thread, m->seq);
    } else if (m->type == M_REP) {
        core_lock(&sr->core);
        sr->app[m->thread].got = m->seq;
        core_wake(&sr->core);
        core_unlock(&sr->core);
    } else if (m->type == M_FIN) {
        sr->finalized[src] = 1;
    }
}

/* peers_round's receiving: everything come from open peers; how much. */
static int read_peers(int r)
{
    struct smsg *m;
    int q, got = 0;
    for (q = 0; q < S.n; q++)
        while (q != r && !S.r[r].eof[q] && (m = pop(q, r))) {
            deliver(r, q, m);
            free(m);
            got++;
        }
    return got;
}

/* ---------------------------------------------------------- the comm thread */

static int io_closed(void *ctx, int q)
{
    return ((struct srank *)ctx)->eof[q];
}

static uint64_t io_last_rx(void *ctx, int q)
{
    return ((struct srank *)ctx)->last_rx[q];
}

static int io_last_tx(void *ctx, int q, uint64_t *at)
{
    *at = ((struct srank *)ctx)->last_tx[q];
    return !((struct srank *)ctx)->shut[q];
}

static void io_lost(void *ctx, int q, uint64_t silent_ns)
{
    S.verdicts++;
    lost((int)((struct srank *)ctx - S.r), q, "silent");
}

static void io_beat(void *ctx, int q)
{
    send_to((int)((struct srank *)ctx - S.r), q, M_HB, 0, 0);
}

/* live_duty reads the peers after it read the clock: the reading takes
 * time, so what it receives is stamped later than the `now` it judges by
 * (the real comm thread's now_ns() before its receive). */
static void io_receive(void *ctx)
{
    S.now += below(LATE + 1);
    read_peers((int)((struct srank *)ctx - S.r));
}

static const struct live_io sim_io = { io_closed, io_last_rx, io_last_tx, io_lost, io_beat,
                                       io_receive };

/* The comm thread decides whether to watch the peers, and waits. */
void comm_wait(int r)
{
    struct srank *sr = &S.r[r];
    sr->watch = lead_watch(&sr->lead);
    sr->wait_since = S.now;
    sr->wait_ns = live_wait_ns(&sr->live, S.now, NONE, !sr->watch);
    sr->late = below(late_max(r) + 1);
    sr->tokens = 0;
}

/* When the comm thread's wait ends (NONE: not yet known). */
uint64_t comm_ready_at(int r)
{
    struct srank *sr = &S.r[r];
    uint64_t at = sr->wait_ns == NONE ? NONE : sr->wait_since + sr->wait_ns;
    int q;
    if (sr->tokens && sr->token_at < at)
        at = sr->token_at;
    for (q = 0; sr->watch && q < S.n; q++)
        if (q != r && !sr->eof[q] && S.head[q][r] && S.head[q][r]->at < at)
            at = S.head[q][r]->at;
    return at == NONE ? NONE : at + sr->late;
}

/* The connections as live_finish sees them. */
static int fin_finalized(void *ctx, int q)
{
    return ((struct srank *)ctx)->finalized[q];
}

static int fin_shut(void *ctx, int q)
{
    struct srank *sr = ctx;
    if (!sr->shut[q]) {
        push((int)(sr - S.r), q, M_EOF, 0, 0);
        sr->shut[q] = 1;
    }
    return 1;
}

static int fin_eof(void *ctx, int q)
{
    return ((struct srank *)ctx)->eof[q];
}

static const struct finish_io sim_finish = { fin_finalized, fin_shut, fin_eof };

/* One round of comm.c's round_of_events, after its wait ended. */
void comm_round(int r)
{
    struct srank *sr = &S.r[r];
    lead_unwatch(&sr->lead);
    if (sr->watch)
        read_peers(r);
    live_duty(&sr->live, S.now, S.n, r, sr->watch, &sim_io, sr);
    if (live_finish(S.n, r, sr->self_finalized, &sim_finish, sr)) {
        sr->clean = 1;
        end_rank(r, "finalized");
        return;
    }
    if (live_fence(&sr->live, S.now, core_failed(&sr->core))) {
        S.fences++;
        end_rank(r, "fenced");
        return;
    }
    comm_wait(r);
}

/* ---------------------------------------------------------- application threads */

/* comm.c's wake(): a write to the eventfd the comm thread polls. */
void wake_comm(struct srank *sr)
{
    if (!sr->tokens++)
        sr->token_at = S.now;
}

int waiting(const struct sapp *a)
{
    return a->state == A_POLL || a->state == A_HOLD || a->state == A_SLEEP;
}

/* core_spin's test, then core_wait's: reply, failure, or go on. */
static void spin_or_sleep(int r, int t)
{
    struct srank *sr = &S.r[r];
    struct sapp *a = &sr->app[t];
    core_lock(&sr->core);
    if (a->got == a->seq || core_failed(&sr->core)) {
        a->left -= a->got == a->seq;
        a->state = core_failed(&sr->core) ? A_DONE : A_THINK;
        a->until = S.now + below(2 * HB);
    } else if (S.now < a->until) {
        if (lead_join(&sr->lead))
            wake_comm(sr);
        a->state = A_POLL;
    } else {
        a->wseq = core_seq(&sr->core);
        a->state = A_SLEEP;
    }
    core_unlock(&sr->core);
}

/* app_poll returns: the last poller hands the peers back. */
static void leave(int r, int t)
{
    struct srank *sr = &S.r[r];
    if (lead_leave(&sr->lead)) {
        S.handovers++;
        wake_comm(sr);
    }
    spin_or_sleep(r, t);
}

void app_step(int r, int t)
{
    struct srank *sr = &S.r[r];
    struct sapp *a = &sr->app[t];
    int q;
    switch (a->state) {
    case A_THINK:
        a->state = A_SEND;
        break;
    case A_SEND:
        if (!a->left || core_failed(&sr->core)) {
            a->state = A_DONE;
            break;
        }
        q = (int)below((uint64_t)S.n - 1);
        q += q >= r;
        a->seq++;
        say("rank %d thread %d asks rank %d (#%u)", r, t, q, a->seq);
        send_to(r, q, M_REQ, t, a->seq);
        a->until = S.now + SPIN;
        spin_or_sleep(r, t);
        break;
    case A_POLL:                    /* mu_trylock(loop_mu), or yield */
        if (S.now >= a->until)
            leave(r, t);
        else if (sr->loop_holder < 0)
            sr->loop_holder = t, a->state = A_HOLD;
        break;
    case A_HOLD:
        sr->loop_holder = -1;
        if (read_peers(r)) {
            S.polled_replies += a->got == a->seq;
            leave(r, t);
        } else {
            a->state = A_POLL;
        }
        break;
    case A_SLEEP:
        core_lock(&sr->core);
        a->wseq = core_seq(&sr->core);
        if (a->got == a->seq || core_failed(&sr->core)) {
            a->left -= a->got == a->seq;
            a->state = core_failed(&sr->core) ? A_DONE : A_THINK;
            a->until = S.now + below(2 * HB);
        }
        core_unlock(&sr->core);
        break;
    case A_DONE:
        break;
    }
}

/* ---------------------------------------------------------- the program */

int threads_done(const struct srank *sr)
{
    int t;
    for (t = 0; t < sr->nthreads; t++)
        if (sr->app[t].state != A_DONE)
            return 0;
    return 1;
}

/* dsm_finalize: DSM_FINALIZE to every peer (on_finalize), then the comm
 * thread closes when every rank said it. */
void finalize(int r)
{
    struct srank *sr = &S.r[r];
    int q;
    say("rank %d finalizes", r);
    for (q = 0; q < S.n; q++)
        if (q != r)
            send_to(r, q, M_FIN, 0, 0);
    sr->self_finalized = 1;
    wake_comm(sr);
}

