/* Layer 1: the comm thread's decisions as step functions of `now`
 * (commstep.h).  No I/O, no lock, no clock of their own. */
#include "commstep.h"

/* ---------------------------------------------------------- leader/follower */

int lead_join(struct lead *l)
{
    __atomic_add_fetch(&l->pollers, 1, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&l->watching, __ATOMIC_SEQ_CST);
}

int lead_leave(struct lead *l)
{
    return !__atomic_sub_fetch(&l->pollers, 1, __ATOMIC_SEQ_CST);
}

int lead_watch(struct lead *l)
{
    __atomic_store_n(&l->watching, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&l->pollers, __ATOMIC_SEQ_CST))
        return 1;
    __atomic_store_n(&l->watching, 0, __ATOMIC_SEQ_CST);
    return 0;
}

void lead_unwatch(struct lead *l)
{
    __atomic_store_n(&l->watching, 0, __ATOMIC_SEQ_CST);
}

/* ---------------------------------------------------------- liveness */

void live_init(struct liveness *lv, uint64_t heartbeat_ns, uint64_t fence_after_ns, uint64_t now)
{
    lv->heartbeat_ns = heartbeat_ns;
    lv->fence_after_ns = fence_after_ns;
    lv->next_tick_ns = lv->next_duty_ns = heartbeat_ns ? now + heartbeat_ns / 4 : 0;
    lv->fence_ns = 0;
}

/* A round of duties begins: 1 if heartbeats are due in it. */
static int live_round(struct liveness *lv, uint64_t now)
{
    int send = now >= lv->next_tick_ns;
    if (!lv->heartbeat_ns)
        return 0;
    if (send)
        lv->next_tick_ns = now + lv->heartbeat_ns / 4;
    lv->next_duty_ns = lv->next_tick_ns;
    return send;
}

/* 1 if a peer last heard at last_rx_ns is dead; else 0, and the next
 * duty comes no later than its deadline. */
static int live_silent(struct liveness *lv, uint64_t now, uint64_t last_rx_ns)
{
    /* a peer heard after `now` was read (by live_duty's own receive, or a
     * polling thread meanwhile) is not silent: now - last_rx_ns would wrap */
    if (last_rx_ns <= now && now - last_rx_ns >= lv->heartbeat_ns)
        return 1;
    if (last_rx_ns + lv->heartbeat_ns < lv->next_duty_ns)
        lv->next_duty_ns = last_rx_ns + lv->heartbeat_ns;
    return 0;
}

/* Is a heartbeat due to a peer last sent to at last_tx_ns? */
static int live_idle(const struct liveness *lv, uint64_t now, uint64_t last_tx_ns)
{
    return last_tx_ns <= now && now - last_tx_ns >= lv->heartbeat_ns / 4;
}

void live_duty(struct liveness *lv, uint64_t now, int nranks, int self, int received,
               const struct live_io *io, void *ctx)
{
    uint64_t rx, tx;
    int r, send;
    if (!lv->heartbeat_ns)
        return;
    if (!received && now >= lv->next_duty_ns)
        io->receive(ctx);
    send = live_round(lv, now);
    for (r = 0; r < nranks; r++) {
        if (r == self || io->closed(ctx, r))
            continue;
        rx = io->last_rx(ctx, r);
        if (live_silent(lv, now, rx))
            io->lost(ctx, r, now - rx);
        if (send && io->last_tx(ctx, r, &tx) && live_idle(lv, now, tx))
            io->beat(ctx, r);
    }
}

int live_fence(struct liveness *lv, uint64_t now, int failed)
{
    if (!lv->heartbeat_ns || !failed)
        return 0;
    if (!lv->fence_ns)
        lv->fence_ns = now + lv->fence_after_ns;
    return now >= lv->fence_ns;
}

uint64_t live_wait_ns(const struct liveness *lv, uint64_t now, uint64_t due, int leader)
{
    if (leader && now + HANDBACK_NS < due)
        due = now + HANDBACK_NS;
    if (lv->next_duty_ns && lv->next_duty_ns < due)
        due = lv->next_duty_ns;
    if (lv->fence_ns && lv->fence_ns < due)
        due = lv->fence_ns;
    if (due == UINT64_MAX)
        return UINT64_MAX;
    return due > now ? due - now : 0;
}

int live_finish(int nranks, int self, int self_finalized, const struct finish_io *io, void *ctx)
{
    int r, open = 0;
    if (!self_finalized)
        return 0;
    for (r = 0; r < nranks; r++)
        if (r != self && !io->finalized(ctx, r))
            return 0;
    for (r = 0; r < nranks; r++)
        if (r != self)
            open += !io->shut(ctx, r) || !io->eof(ctx, r);
    return !open;
}

int live_eof_lost(int peer_finalized, int self_finalized)
{
    return !peer_finalized || !self_finalized;
}
