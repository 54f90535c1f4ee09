/* State and interfaces shared by the C files of the core.
 *
 *   fault.c      SIGSEGV dispatch: in the region -> coh_fault, else chain
 *   region.c     the two views of the memory, the page table, protections
 *   coherence.c  the write-invalidate protocol (requester, home, owner, holder)
 *   comm.c       the comm pthread: poll loop, framing, outboxes, finalize
 *   sync.c       collectives (barrier, bcast) and locks
 *   net.c        socket and wire-format helpers
 *
 * Threads: application threads only ever block in coh_fault (inside the
 * signal handler) or in the blocking entry points (barrier, lock, ...).  They
 * send small messages to peers themselves, and post messages meant for their
 * own rank to the comm thread through a ring under st.mu.  The comm thread
 * alone receives, changes protections, and keeps the home directory and the
 * lock queues. */
#ifndef DSM_INTERNAL_H
#define DSM_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "dsm_api.h"
#include "proto.h"

#define DSM_MAX_RANKS 64        /* copysets are 64-bit masks */
#define RING_CAP 1024

enum dsm_phase { PHASE_IDLE, PHASE_RUNNING, PHASE_FINISHED };

/* One page as this rank sees it.  prot and pending are guarded by st.mu. */
struct page {
    uint8_t prot;               /* DSM_PROT_* of the application view */
    uint8_t pending;            /* mode of our outstanding DSM_REQ, or 0 */
    uint8_t invalidated;        /* a writer has taken a read copy of ours away */
    uint32_t given_up;          /* times this rank served or dropped it (thrashing) */
    uint64_t installed_ns;      /* when it was last received (hold window) */
};

/* A broadcast value received, waiting for dsm_bcast to take it. */
struct bcast_value {
    uint64_t seq;
    uint32_t len;
    unsigned char *data;
    struct bcast_value *next;
};

struct dsm_state {
    /* configuration, fixed after dsm_start */
    int rank, nranks, debug;
    uint64_t base, size, npages, page_size, block;
    uint64_t hold_ns;
    uint64_t readahead;         /* most pages one read fault asks for */
    uint64_t spin_ns;           /* how long a waiting thread yields before sleeping */
    int master_fd;

    /* region.c */
    int memfd;
    unsigned char *app;         /* the protected application view */
    unsigned char *rw;          /* the always read/write view */
    struct page *pages;
    uint64_t runs, run_budget;  /* protection runs in the app view */

    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct msg ring[RING_CAP];  /* messages to ourselves from application threads */
    unsigned ring_head, ring_len;
    uint64_t coll_seq;          /* collectives this rank started */
    uint64_t coll_done;         /* collectives that completed */
    char coll_error[DSM_ERRLEN];/* why the last one failed, or "" */
    struct bcast_value *inbox;
    uint32_t nlocks;
    uint8_t *lock_state;        /* LOCK_* of each lock, as this rank sees it */
    int phase;
    int failed;
    char failure[DSM_ERRLEN];

    int evfd;                   /* wakes the comm thread */
    int busy_poll;              /* threads asking the comm thread not to sleep */
    pthread_t thread;
    struct dsm_stats stats;
};

extern struct dsm_state st;

/* Tracing that costs one branch when DSM_DEBUG is off. */
#define TRACE(...) do { if (st.debug) dsm_trace(__VA_ARGS__); } while (0)
void dsm_trace(const char *fmt, ...);
void dsm_panic(const char *fmt, ...) __attribute__((noreturn));
void dsm_err(char *err, const char *fmt, ...);
uint64_t now_ns(void);
int dsm_running(char *err);
void dsm_spin(int (*cond)(const void *), const void *arg, int poll_comm);

/* region.c */
int region_map(char *err);
int region_set_prot(uint64_t first, uint64_t n, int prot);   /* comm thread only */
static inline int page_home(uint64_t page)
{
    return (int)((page / st.block) % (uint64_t)st.nranks);
}

/* fault.c */
int fault_install(char *err);
int fault_ensure(void);

/* coherence.c */
int coh_init(char *err);
void coh_fault(uint64_t page, int write);         /* application thread */
void coh_dispatch(const struct msg *m, const unsigned char *payload);
void coh_flush(int type);   /* batched work not of this message type takes effect */

/* sync.c */
int sync_init(uint32_t nlocks, char *err);
void sync_dispatch(const struct msg *m, const unsigned char *payload);
void sync_finalized(int rank);                    /* comm thread */

/* comm.c */
int comm_start(const int *peer_fds, char *err);
int comm_post(const struct msg *m);               /* caller holds st.mu */
void comm_send(int dst, struct msg *m, const void *payload, uint32_t len);
int comm_send_app(int dst, struct msg *m, const void *payload, uint32_t len);
void comm_defer(const struct msg *m, uint64_t due_ns);
void comm_fail(const char *fmt, ...);

/* net.c */
int net_prepare(int fd, char *err);
ssize_t net_send_frame(int fd, const unsigned char *hdr, const void *payload, size_t len);
#endif
