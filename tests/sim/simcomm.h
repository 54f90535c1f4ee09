/* The simulation of the comm thread (simcomm.c: the ranks and their
 * threads; simcommrun.c: the scheduler and the rules).  See simcommrun.c. */
#ifndef DSM_SIMCOMM_H
#define DSM_SIMCOMM_H
#include "commstep.h"
#include "ground.h"

#define MAXR 4
#define MAXT 2
#define REQS 3
#define HB 1000000ULL               /* simulated heartbeat_ns */
#define TICK (HB / 4)
#define FENCE (8 * HB)              /* FENCE_NS, scaled to the simulated heartbeat */
#define SPIN 20000ULL               /* spin_ns */
#define STEP 2000                   /* a step costs up to this */
#define LATE 20000                  /* a comm thread wakes this late at most ... */
#define LAT 30000                   /* ... and a message takes this long at most */
#define SLOW_LATE 300000            /* the same for a slow rank (lateness also */
#define SLOW_LAT 100000             /* for every rank of a loaded machine) */
#define MAX_STEPS 400000
#define NONE UINT64_MAX

enum mtype { M_REQ, M_REP, M_HB, M_FIN, M_EOF };
enum fate { F_NONE, F_SILENT, F_DEAD, F_RESET };
/* An application thread: computing, sending a request, in app_poll
 * (without / holding loop_mu), asleep on the event count, or done. */
enum astate { A_THINK, A_SEND, A_POLL, A_HOLD, A_SLEEP, A_DONE };

struct smsg {
    enum mtype type;
    int thread;
    uint32_t seq;
    uint64_t at;                    /* arrives then */
    struct smsg *next;
};

struct sapp {
    enum astate state;
    int left;                       /* requests still to make */
    uint32_t seq, got;              /* the request waited for; the last reply that came */
    uint64_t until;                 /* core_spin's end; A_THINK: the computation's */
    uint32_t wseq;                  /* A_SLEEP: the event count read */
};

struct srank {
    struct core core;
    struct lead lead;
    struct liveness live;
    struct sapp app[MAXT];
    int nthreads, loop_holder;      /* the thread holding loop_mu, -1: none */
    int watch, tokens;              /* comm thread: waits on the peers; wake-ups pending */
    uint64_t wait_since, wait_ns, late, token_at;
    uint64_t last_rx[MAXR], last_tx[MAXR];
    int eof[MAXR], shut[MAXR], finalized[MAXR], self_finalized;
    int ended, stopped, slow, stuck, clean, silent_verdict;
    uint64_t failed_at, exit_at;
};


struct world {
    int n, tracing;
    uint64_t rng, now;
    struct srank r[MAXR];
    struct smsg *head[MAXR][MAXR], *tail[MAXR][MAXR];
    int faulty, resets_left, loaded;
    enum fate fate;
    uint64_t fault_at;              /* silent or dead from then on */
    char violation[256];
    uint64_t verdicts, fences, handovers, polled_replies;     /* coverage */
};
extern struct world S;

/* simcomm.c: the world's helpers */
uint64_t below(uint64_t n);
uint64_t sim_clock(void);
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void violate(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t late_max(int r);
int gone(int r);
/* the ranks */
void end_rank(int r, const char *why);
void send_to(int r, int q, enum mtype type, int thread, uint32_t seq);
void comm_wait(int r);
uint64_t comm_ready_at(int r);
void comm_round(int r);
void wake_comm(struct srank *sr);
int waiting(const struct sapp *a);
void app_step(int r, int t);
int threads_done(const struct srank *sr);
void finalize(int r);
#endif
