/* Layer 0: the messages between ranks, and their wire header.
 * A connection carries these only after the Python handshake
 * (services/wire.py) succeeded.  Each family of messages has its own typed
 * fields: a page is a page, a collective's epoch is an epoch. */
#ifndef DSM_PROTO_H
#define DSM_PROTO_H
#include <stdint.h>

enum msg_type {
    DSM_REQ = 1,        /* requester -> home: I need `count` pages (mode) */
    DSM_FWD,            /* home -> owner: serve page (mode) to origin */
    DSM_PAGE,           /* owner -> requester: `count` pages' data, or a grant without data */
    DSM_UPDATE,         /* requester -> home: installed `count` pages `server` sent */
    DSM_INV,            /* home -> copy holder: drop your read copy */
    DSM_INV_ACK,        /* copy holder -> home: dropped */
    DSM_FINALIZE,       /* rank -> every peer: I will need nothing more, after
                         * `epoch` collectives */
    DSM_LOCK_ACQ,       /* rank -> lock home: I want `lock` (my request `seq`) */
    DSM_LOCK_GRANT,     /* home or last holder -> rank: it is yours */
    DSM_LOCK_REL,       /* holder -> lock home: I gave it back, knowing no successor */
    DSM_LOCK_NEXT,      /* lock home -> tail: `succ` comes after your request `seq` */
    DSM_COLL,           /* rank -> partner: step `round` of collective `epoch` */
    DSM_DIFF,           /* release mode, writer -> home: the words it changed */
    DSM_DIFF_ACK,       /* release mode, home -> writer: applied */
    DSM_HEARTBEAT,      /* rank -> peer: still alive (sent when idle; transport-level) */
    DSM_UNPIN,          /* rank -> itself: pages were unpinned, run what was parked */
    DSM_PLACE,          /* rank -> itself, then -> every peer: my part of a placement is
                         * done; all I sent before it for those pages has gone */
    DSM_LOCK_TRY,       /* rank -> lock home: `lock` if it is free, else DSM_LOCK_BUSY */
    DSM_LOCK_BUSY,      /* lock home -> rank: your DSM_LOCK_TRY found it held */
    DSM_POST,           /* rank -> rank: one wake-up for the key in the payload (mbox.h) */
    DSM_LOST,           /* host leader -> its direct peers that have no connection to
                         * rank `origin`: it is lost (payload: peer.c's) */
    /* share=host across hosts (coh_host.c): a host's ranks and its leader
     * (these four together, first to last: peer.c counts them as host_msgs) */
    DSM_HREQ,           /* local rank -> its leader: my host lacks `page` for `mode` */
    DSM_HGRANT,         /* leader -> local rank: the host holds `page` now, map it */
    DSM_HINV,           /* leader -> local rank: lower your mapping of `page` to `mode`
                         * (0: drop it) */
    DSM_HINV_ACK,       /* local rank -> leader: lowered */
    /* ... in release mode, the host's twins and diffs being its leader's */
    DSM_HFLUSH,         /* rank -> its leader: send home what the host wrote */
    DSM_HDROP,          /* rank -> its leader: drop the host's copies of the pages in the
                         * payload (u64 barrier epoch, then a bitmap of pages), once the
                         * leader passed that barrier */
    DSM_HDONE,          /* leader -> rank: your DSM_HFLUSH or DSM_HDROP is done (a
                         * flush's: the pages the host sent home since your last) */
    DSM_MSG_MAX
};

enum msg_mode { MODE_READ = 1, MODE_WRITE = 2 };

/* page.flags of DSM_FWD: the requester already holds a current copy; send no data. */
#define FWD_NODATA 1
/* page.flags of DSM_HFLUSH, DSM_HDROP: the leader to itself, its work going
 * on after a lowering of the host's copy (no new request). */
#define HOST_RESUME 2
/* page.flags of DSM_HFLUSH: the flush of a barrier. */
#define HOST_BARRIER 4
/* page.flags of DSM_HFLUSH: the leader to itself: its twins are over
 * DSM_TWIN_LIMIT, dirty pages go home early until there is room for one
 * more (no answer). */
#define HOST_TRIM 8

/* Most pages one DSM_PAGE or DSM_UPDATE carries: a run of read-ahead or
 * prefetched pages travels as one message with one header. */
#define RUN_MAX 256

struct page_fields {            /* DSM_REQ .. DSM_INV_ACK, DSM_DIFF, DSM_DIFF_ACK, DSM_H* */
    uint64_t page;
    uint32_t count;             /* DSM_REQ, DSM_PAGE, DSM_UPDATE: pages from `page` on,
                                 * all with one home (0 means 1) */
    uint8_t mode;               /* MODE_* (DSM_HINV: 0, MODE_READ) */
    uint8_t flags;              /* DSM_FWD: FWD_NODATA */
    uint16_t server;            /* DSM_UPDATE: the rank that sent the page */
};

struct coll_fields {            /* DSM_COLL (the payload is coll.c's), DSM_FINALIZE */
    uint64_t epoch;             /* the collective's number, counted on every rank */
    uint32_t round;             /* which exchange of the collective */
};

struct lock_fields {            /* DSM_LOCK_* */
    uint32_t lock;
    uint32_t seq;               /* the requester's count of its requests for the lock */
    uint16_t succ;              /* DSM_LOCK_NEXT: the next in the queue */
};

/* In memory (host order).  `from` and `to` are the true sender and the
 * final destination, which a message routed through host leaders keeps on
 * the wire (route.h); the sender's transport fills them in. */
struct msg {
    uint8_t type;
    uint16_t origin;            /* the rank whose call started this exchange */
    uint16_t from;
    uint16_t to;
    uint32_t len;               /* payload bytes following the header */
    union {
        struct page_fields pg;
        struct coll_fields coll;
        struct lock_fields lk;
    };
};

#define MSG_WIRE_SIZE 28
#define DSM_MAX_COLL (1u << 31)    /* payload bytes of one collective message */

void msg_encode(const struct msg *m, unsigned char out[MSG_WIRE_SIZE]);
void msg_decode(const unsigned char in[MSG_WIRE_SIZE], struct msg *m);
const char *msg_name(int type);

#endif
