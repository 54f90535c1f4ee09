/* Layer 1: one peer connection of the socket backend: framing, the
 * outbox, and receiving (a page payload straight into its pages).  The
 * comm thread reads and flushes; any thread sends. */
#ifndef DSM_PEER_H
#define DSM_PEER_H
#include <sys/types.h>
#include "route.h"
#include "transport.h"

/* How a rank tells dsmexec which peer it lost: one LOST_PEER control
 * message (services/wire.py, type 5, body {"peer", "how", "peer_error"})
 * written straight onto the connection to dsmexec, before the failure is
 * recorded, so that it is out even if the rank then ends in dsm_panic.
 * One per process: the first loss is the one to blame.  Shared by the
 * peers of one comm (comm.c owns it). */
struct loss_report {
    int master_fd;              /* the connection to dsmexec; -1: none (run alone) */
    int sent;                   /* a report went out (atomic) */
};

/* Passing messages on: a message whose destination is another rank goes
 * to the next hop of this rank's route to it (route.h), in C, on the comm
 * thread.  Shared by the peers of one comm (comm.c owns it). */
struct relay {
    struct peer *peers;         /* every rank's entry, by rank */
    const struct route *route;
    uint64_t finalizes;         /* DSM_FINALIZE messages passed on (comm thread) */
    int spread;                 /* a DSM_LOST went out (atomic): once per process */
};

struct buf {
    unsigned char *data;
    size_t off, len, cap;       /* live bytes are data[off, len) */
};

struct peer {
    struct transport *t;
    int rank;                   /* whose connection this is */
    int fd;
    int finalized;              /* its DSM_FINALIZE arrived */
    int eof;                    /* it closed its side */
    int shut;                   /* we closed ours */
    struct buf rx;
    struct msg sink_m;          /* a message whose payload is being received ... */
    unsigned char *sink;        /* ... straight to here (tp_sink_of); NULL: none */
    size_t sink_got;            /* ... bytes of it so far */
    pthread_mutex_t txmu;       /* tx: the comm thread and faulting threads send */
    struct buf tx;
    uint64_t last_rx_ns;        /* when a byte last came (comm thread) */
    uint64_t last_tx_ns;        /* when something was last sent (under txmu) */
    struct loss_report *report;
    struct relay *relay;
};

/* Before use: the connection to `rank` over fd (not yet prepared); fd -1:
 * no connection (a rank reached through the leaders), closed both ways. */
void peer_init(struct peer *p, struct transport *t, int rank, int fd,
               struct loss_report *report, struct relay *relay);
void peer_free(struct peer *p);
/* Send m (and m->len payload bytes) over p's connection to rank `to`:
 * p's own rank, or one p is the next hop to.  `now`: an application
 * thread, which sends at once rather than leave it for the comm thread.
 * 1 if something is left in the outbox for peer_flush. */
int peer_send(struct peer *p, int to, const struct msg *m, const void *payload, int now);
/* Comm thread: receive what has come and deliver every complete message.
 * An end of stream before both sides finalized fails the job. */
void peer_read(struct peer *p, int self_finalized);
/* Comm thread: write as much of the outbox as the socket takes. */
void peer_flush(struct peer *p);
/* The rank of p is lost (how: "closed" or "silent"): report it to dsmexec
 * and record the failure (core_fail_peer, which takes no lock), and tell
 * the direct peers that have no connection to it (DSM_LOST), so that they
 * name it too rather than this rank when it ends.  Any thread but one
 * holding a peer's txmu. */
void peer_lost(struct peer *p, const char *how, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define PEER_LOST_MAX (3 + DSM_ERRLEN)  /* DSM_LOST's payload bytes at most */
/* Comm thread: a DSM_LOST came (m->origin, payload: how, then why): as
 * peer_lost, naming that rank. */
void peer_lost_heard(struct peer *p, const struct msg *m, const unsigned char *payload);
#endif
