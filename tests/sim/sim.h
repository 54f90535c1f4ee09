/* The deterministic simulation of the protocol layers (see sim.c).
 * Every simulated rank has the real core, transport common part, coherence,
 * collectives and locks state of its own; simnet.c is the transport backend and the
 * memory they run on. */
#ifndef DSM_SIM_H
#define DSM_SIM_H
#include <stdint.h>
#include "coherence.h"
#include "coll.h"
#include "locks.h"

#define SIM_MAX_RANKS 6
#define SIM_MAX_THREADS 2
#define SIM_PAGE 64                 /* bytes a simulated page holds: 8 words */
#define SIM_WORDS (SIM_PAGE / 8)

struct sim_msg {
    struct msg m;
    unsigned char *payload;
    uint64_t id;                    /* unique over the run: lost or twice is a bug */
    int eof;                        /* the sender died: end of stream */
    struct sim_msg *next;
};

struct chan {                       /* FIFO from one rank to another */
    struct sim_msg *head, *tail;
    unsigned len;
};

struct sim_deferred {
    uint64_t due;
    struct msg m;
    struct sim_deferred *next;
};

struct sim;

struct srank {
    int id;
    struct sim *sim;
    int dead;
    struct core core;
    struct transport tp;
    struct coh coh;
    struct coll coll;
    struct locks locks;
    struct sim_deferred *deferred;
    int self_finalized;
    int peer_finalized[SIM_MAX_RANKS];
    int peer_eof[SIM_MAX_RANKS];
};

struct sim {
    int n;
    struct srank r[SIM_MAX_RANKS];
    struct chan ch[SIM_MAX_RANKS][SIM_MAX_RANKS];
    uint64_t next_id;
    unsigned char *delivered;       /* per message id: how often it was delivered */
    uint64_t delivered_cap;
    char violation[512];            /* the first broken rule, or "" */
};

extern uint64_t sim_now;            /* simulated ns: the core's clock */

/* simnet.c */
int simnet_rank_init(struct sim *s, int id, uint64_t npages, uint64_t block, uint64_t readahead,
                     uint64_t hold_ns, uint32_t nlocks);
void simnet_rank_free(struct srank *r);
/* Deliver up to `burst` messages of channel src -> dst, then settle. */
void simnet_deliver(struct sim *s, int src, int dst, int burst, void (*observe)(struct sim *,
                    int dst, const struct msg *));
void simnet_drain_ring(struct srank *r);
int simnet_fire_deferred(struct srank *r);                   /* 1 if one was due */
void simnet_kill(struct sim *s, int id);
void sim_violation(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#endif
