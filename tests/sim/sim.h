/* The deterministic simulation of the protocol layers (see sim.c).
 * Every simulated rank has the real core, transport common part, coherence,
 * collectives, locks and operations state of its own; simnet.c is the
 * transport backend and the memory they run on.  A thread's tasks (struct
 * task) are what the scenario asks of it; each runs as operations (struct
 * op, ops.h). */
#ifndef DSM_SIM_H
#define DSM_SIM_H
#include <stdint.h>
#include "coherence.h"
#include "coll.h"
#include "locks.h"
#include "ops.h"

#define SIM_MAX_RANKS 6
#define SIM_MAX_THREADS 2
#define SIM_PAGE 64                 /* bytes a simulated page holds: 8 words */
#define SIM_WORDS (SIM_PAGE / 8)
#define DATA_WORDS (SIM_WORDS - 2)      /* the last two words hold lock counters */

struct sim_msg {
    struct msg m;
    unsigned char *payload;
    uint64_t id;                    /* unique over the run: lost or twice is a bug */
    int eof;                        /* the sender died: end of stream */
    unsigned char *sink;            /* its payload is being received here (tp_sink_of) */
    uint32_t got;                   /* ... this many bytes so far */
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
    struct ops ops;
    struct sim_deferred *deferred;
    int self_finalized;
    int peer_finalized[SIM_MAX_RANKS];
    int peer_eof[SIM_MAX_RANKS];
};

struct sim {
    int n;
    struct srank r[SIM_MAX_RANKS];
    /* --hosts: ranks in hosts of consecutive ranks sharing one memory (as
     * DSM_SHARE=host on several hosts); nhosts 0: every rank its own copy */
    int nhosts;
    int host[SIM_MAX_RANKS];                    /* each rank's host */
    uint16_t leaders[SIM_MAX_RANKS];            /* each host's leader, its lowest rank */
    uint16_t host_of[SIM_MAX_RANKS];            /* a leader's host, by rank */
    uint16_t locals[SIM_MAX_RANKS][SIM_MAX_RANKS];  /* each host's ranks */
    int nlocal[SIM_MAX_RANKS];
    unsigned char *host_rw[SIM_MAX_RANKS];      /* each host's memory */
    uint64_t *host_state[SIM_MAX_RANKS];        /* ... and its page words (hostmem.h) */
    struct chan ch[SIM_MAX_RANKS][SIM_MAX_RANKS];
    uint64_t next_id;
    unsigned char *delivered;       /* per message id: how often it was delivered */
    uint64_t delivered_cap;
    char violation[512];            /* the first broken rule, or "" */
    uint64_t split_receipts;        /* payloads received in two parts, steps between */
};

extern uint64_t sim_now;            /* simulated ns: the core's clock */

/* sim.c: the running thread of rank r dropped core.mu (a send, a protect,
 * a populate): other threads of the rank may run meanwhile. */
void sim_yield(int r);

/* simnet.c */
/* --hosts: group the s->n ranks into `nhosts` hosts of consecutive ranks,
 * size[h] in host h, before the ranks start. */
void simnet_hosts(struct sim *s, int nhosts, const int *size, uint64_t npages);
int simnet_rank_init(struct sim *s, int id, uint64_t npages, uint64_t block, uint64_t readahead,
                     uint64_t hold_ns, uint32_t nlocks, int release);
void simnet_rank_free(struct srank *r);
/* Deliver up to `burst` messages of channel src -> dst, then settle. */
void simnet_deliver(struct sim *s, int src, int dst, int burst, int settle,
                    void (*observe)(struct sim *, int dst, const struct msg *));
void simnet_settle(struct srank *r);
void simnet_drain_ring(struct srank *r);
int simnet_fire_deferred(struct srank *r);                   /* 1 if one was due */
void simnet_kill(struct sim *s, int id);
void sim_violation(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------- the world */

#define MAX_TASKS 64
#define TRACE_KEEP 80
#define MAX_LOCKS 2

enum task_kind { T_READ, T_WRITE, T_LOCK_INC, T_COLL, T_FINALIZE, T_PIN, T_PREFETCH };
extern const char *task_names[];

struct task {
    enum task_kind kind;
    uint32_t page, word, lock;
    uint32_t coll;                  /* T_COLL: which of the job's collectives */
    uint32_t count, write;          /* T_PIN, T_PREFETCH: pages [page, page + count), for
                                     * writing */
    int phase;                      /* collectives before it (thread 0), or -1 */
};

/* The job's collectives, the same on every rank.  COLL_PLACE (sequential
 * mode) moves the homes of pages [first, first + n) to homes[]. */
#define COLL_PLACE 100
struct coll_spec {
    int kind, root, op;
    int wide;                       /* a reduce of 4 numbers (32 bytes), else of 2 */
    uint32_t first, n;
    uint16_t homes[8];
};
#define MAX_COLLS 8

struct thread {
    struct task tasks[MAX_TASKS];
    int ntasks, pc, phase;
    int colls_done;             /* collectives it ended */
    struct op op;               /* the operation it runs (ops.h), if in_op */
    int in_op;
    char err[DSM_ERRLEN];       /* the op's error */
    int64_t mine[4];            /* its contribution to the collective it runs */
    int began;                  /* the collective task began its first collective */
    /* --hosts, sequential mode: a leader's collective among the leaders
     * (simapp.c's two levels): its call, the host's identities and bytes */
    struct coll_call level_call;
    struct coll_seed level_seed;
    unsigned char level_in[SIM_MAX_RANKS * 40];
    uint32_t upto;              /* T_PIN: pages pinned so far */
    uint64_t epoch;
    int ended;                  /* stopped by the job's failure */
    /* Its last step went nowhere: it sleeps as core_sleep does, on the
     * event count it read before the step, until a core_wake moves it. */
    int asleep;
    uint32_t seq;
};

struct lock_fifo {
    int q[64];
    int head, len;
};

struct world {
    struct sim s;
    uint64_t rng, seed;
    int nthreads;
    uint64_t npages;
    uint32_t nlocks;
    struct thread th[SIM_MAX_RANKS][SIM_MAX_THREADS];
    unsigned char *shadow;
    uint64_t writes;
    struct lock_fifo fifo[MAX_LOCKS];
    uint8_t was_held[SIM_MAX_RANKS][MAX_LOCKS];
    struct coll_spec colls[MAX_COLLS + 1];
    /* --mismatch: the ranks of odd_ranks (a mask) call odd instead of
     * collective odd_at, or odd_at is -1; every rank must fail there. */
    int mismatch, odd_at;
    uint64_t odd_ranks;
    struct coll_spec odd;
    int release;                    /* release consistency */
    int hosts;                      /* --hosts: ranks grouped in hosts (struct sim) */
    uint32_t *hist;                 /* release mode: the word each value was written to */
    int began[SIM_MAX_RANKS];       /* collectives each rank began */
    /* --hosts in sequential mode: each host's two-level collectives
     * (simapp.c), by host */
    struct {
        int arrived[MAX_COLLS + 2]; /* ranks of the host in collective k */
        int handed;                 /* 1 + the last collective the leader handed out
                                       (a placement is none: it runs among all ranks) */
        int rc;                     /* the last one's outcome: its error, */
        char err[DSM_ERRLEN];
        unsigned char *bytes;       /* ... or its bytes (the root's, or every rank's entry) */
        uint64_t len;
    } level[SIM_MAX_RANKS];
    struct {                    /* what the seeds exercised, summed over the run */
        uint64_t fanout;        /* steps with a page served to several readers at once */
        uint64_t ring_full;     /* sends that found a ring full */
        uint64_t handoffs;      /* locks handed from holder to holder, not by the home */
        uint64_t collectives;
        uint64_t homes_moved;   /* pages whose home moved: placed, or (release mode)
                                 * following its writer */
        uint64_t runs;          /* DSM_PAGE messages carrying several pages */
        uint64_t split;         /* payloads received straight into pages in two parts */
        uint64_t early;         /* read-ahead runs asked for at a trigger page */
        uint64_t opened;        /* pages their faulting thread opened */
        uint64_t nested;        /* steps run while another thread of the rank had core.mu dropped */
        uint64_t host_copies;   /* --hosts: steps with a page on a host of several ranks */
        uint64_t host_invs;     /* ... DSM_HINVs: a leader lowering its ranks' mappings */
        uint64_t overflow_invs; /* ... of them, to ranks beyond the bits (HOST_OVERFLOW) */
        uint64_t host_maps;     /* ... faults a host's copy served with no message */
        uint64_t early_flushes; /* pages sent home early to bound the twins */
        uint64_t among_all;     /* ... large reduces a rank ran among all the ranks */
    } cover;
    int dropped;                /* rank killed, or -1 */
    int dropped_finalized;      /* it had told its peers DSM_FINALIZE */
    /* Who runs now (the scheduler's top-level action): a thread of a rank,
     * or its comm thread (thread -1); `nested` while another thread of that
     * rank runs meanwhile (sim_yield). */
    int actor_rank, actor_thread, nested;
    int exiting;                    /* a rank whose program exits after the nested step, or -1 */
    int tracing;
    char trace[TRACE_KEEP][200];
    unsigned ntrace;
};
extern struct world W;

/* sim.c */
uint64_t below(uint64_t n);
/* Where a thread is in its operations: a step that leaves it as it was
 * went nowhere, and the thread sleeps. */
uint64_t thread_progress(const struct thread *th);
void step_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t *word_at(unsigned char *mem, uint32_t page, uint32_t word);

/* simapp.c: the application side */
void make_scenario(void);
/* --hosts, once the hosts are drawn: the placements' homes are leaders. */
void place_at_leaders(void);
int thread_ready(int r, int t);
void app_step(int r, int t);
int thread_done(const struct thread *th);

/* simcheck.c: the rules */
void observe(struct sim *s, int dst, const struct msg *m);
void check_step(void);
void check_nested_step(void);
void check_end(void);
#endif
