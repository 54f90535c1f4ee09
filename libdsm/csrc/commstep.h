/* Layer 1: the comm thread's decisions, as step functions of the time
 * `now` that do no I/O and take no lock: who runs the event loop in
 * DSM_WAIT=reply (the comm thread, or an application thread waiting for a
 * reply), when a heartbeat is due, when a silent peer is dead, when the
 * job fences itself, how long the loop may wait, and when an end of
 * stream is a loss.  comm.c and peer.c call them with now_ns() around
 * ppoll and the sockets; the simulator (tests/sim/simcomm.c) calls the
 * same functions with its simulated clock and channels. */
#ifndef DSM_COMMSTEP_H
#define DSM_COMMSTEP_H
#include <stdint.h>

#define FENCE_NS 2000000000ULL  /* after a failure, the program's time to end */
#define HANDBACK_NS 100000ULL   /* while threads poll, the comm thread looks this often */

/* Leader/follower in DSM_WAIT=reply.  The peers' sockets are read by one
 * thread at a time, the holder of comm.c's loop_mu: the comm thread, which
 * sleeps on them, or an application thread waiting for a reply
 * (app_poll), which polls them itself; then the comm thread leaves them
 * and looks again every HANDBACK_NS, so that a reply wakes one thread
 * only.  Both fields atomic (sequentially consistent: each side writes its
 * own, then reads the other's, as in Dekker's algorithm). */
struct lead {
    int pollers;                /* application threads polling the peers */
    int watching;               /* the comm thread sleeps on the peer sockets */
};

/* An application thread starts to poll the peers: 1 if it must wake the
 * comm thread, which sleeps on them and would receive the reply itself. */
int lead_join(struct lead *l);
/* It stops: 1 if it must wake the comm thread (it was the last poller,
 * and the peers are the comm thread's again). */
int lead_leave(struct lead *l);
/* The comm thread, holding loop_mu, before it waits: 1 if it is to wait
 * on the peers itself; 0 while an application thread polls them. */
int lead_watch(struct lead *l);
/* The comm thread's wait ended. */
void lead_unwatch(struct lead *l);

/* Liveness: heartbeats, silence, self-fencing.  The comm thread's alone. */
struct liveness {
    uint64_t heartbeat_ns;      /* a peer silent this long is dead; 0: heartbeats off */
    uint64_t fence_after_ns;    /* after a failure, the program's time to end */
    uint64_t next_tick_ns;      /* next round of heartbeats */
    uint64_t next_duty_ns;      /* next heartbeat or silence check; 0: heartbeats off */
    uint64_t fence_ns;          /* when to end the process after a failure; 0: none */
};

/* Heartbeats every heartbeat_ns / 4 from `now` on (heartbeat_ns 0: off). */
void live_init(struct liveness *lv, uint64_t heartbeat_ns, uint64_t fence_after_ns, uint64_t now);
/* How live_duty sees the peers: comm.c's sockets, or the simulator's
 * channels.  `r` is never the rank itself. */
struct live_io {
    int (*closed)(void *ctx, int r);            /* it closed its side: no verdict, no heartbeat */
    uint64_t (*last_rx)(void *ctx, int r);      /* when a byte last came from it */
    int (*last_tx)(void *ctx, int r, uint64_t *at); /* 0: we closed ours; else *at: last send */
    void (*lost)(void *ctx, int r, uint64_t silent_ns);    /* it is dead: silent this long */
    void (*beat)(void *ctx, int r);             /* send it a heartbeat */
    void (*receive)(void *ctx);                 /* receive what came from the peers now */
};
/* The heartbeat duty at `now`, each round, after what came was received
 * (`received`: this round read every peer; if not, and a verdict may be
 * due, io->receive reads them first: a verdict on bytes left unread would
 * blame a live peer for this rank's own lateness).  A peer silent for
 * heartbeat_ns is dead; every heartbeat_ns / 4, a heartbeat to each peer
 * we have been silent to for that long.  Sets next_duty_ns: the next
 * tick, or the first peer's silence deadline. */
void live_duty(struct liveness *lv, uint64_t now, int nranks, int self, int received,
               const struct live_io *io, void *ctx);
/* Self-fencing, each round: once the job failed (`failed`), the program
 * has fence_after_ns to end; 1 when the process is to end itself now. */
int live_fence(struct liveness *lv, uint64_t now, int failed);
/* How long the loop may wait from `now`: until the next deferred message
 * (`due`; UINT64_MAX: none), heartbeat duty or fence; at most HANDBACK_NS
 * while an application thread leads (`leader`).  UINT64_MAX: no limit. */
uint64_t live_wait_ns(const struct liveness *lv, uint64_t now, uint64_t due, int leader);
/* How live_finish sees the connections (comm.c's sockets, the
 * simulator's channels).  `r` is never the rank itself. */
struct finish_io {
    int (*finalized)(void *ctx, int r);     /* its DSM_FINALIZE came */
    int (*shut)(void *ctx, int r);          /* shut our side once its outbox is empty: 1 if shut */
    int (*eof)(void *ctx, int r);           /* it shut its side */
};
/* Finalize's progress, each round: once this rank (`self_finalized`) and
 * every peer said DSM_FINALIZE, each connection is shut as its outbox
 * empties; 1 when the loop may stop (every connection shut both ways:
 * nothing anyone still needs is in flight). */
int live_finish(int nranks, int self, int self_finalized, const struct finish_io *io, void *ctx);
/* Is an end of stream from a peer the loss of it?  Yes unless it and we
 * both said DSM_FINALIZE (then it is the end of the job). */
int live_eof_lost(int peer_finalized, int self_finalized);
#endif
