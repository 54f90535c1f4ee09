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
    DSM_PAGE,           /* owner -> requester: page data, or a grant without data */
    DSM_UPDATE,         /* requester -> home: installed a page a third rank sent */
    DSM_INV,            /* home -> copy holder: drop your read copy */
    DSM_INV_ACK,        /* copy holder -> home: dropped */
    DSM_BARRIER,        /* rank -> rank 0: arrived at collective `epoch` (kind, root) */
    DSM_BARRIER_GO,     /* rank 0 -> every rank: all arrived (or the error text) */
    DSM_FINALIZE,       /* rank -> every peer: I will need nothing more */
    DSM_LOCK_ACQ,       /* rank -> lock home: I want `lock` */
    DSM_LOCK_GRANT,     /* lock home -> rank: it is yours */
    DSM_LOCK_REL,       /* rank -> lock home: I give it back */
    DSM_BCAST,          /* root -> rank: the value of collective `epoch` */
    DSM_HEARTBEAT,      /* rank -> peer: still alive (sent when idle; transport-level) */
    DSM_UNPIN,          /* rank -> itself: pages were unpinned, run what was parked */
    DSM_MSG_MAX
};

enum msg_mode { MODE_READ = 1, MODE_WRITE = 2 };

/* page.flags of DSM_FWD: the requester already holds a current copy; send no data. */
#define FWD_NODATA 1
/* page.flags of DSM_PAGE: it came from a rank other than the home; confirm
 * to the home with DSM_UPDATE once installed. */
#define PAGE_NEEDS_UPDATE 1

struct page_fields {            /* DSM_REQ .. DSM_INV_ACK */
    uint64_t page;
    uint32_t count;             /* DSM_REQ: pages from `page` on, one home block */
    uint8_t mode;               /* MODE_* */
    uint8_t flags;              /* FWD_NODATA, PAGE_NEEDS_UPDATE */
};

struct coll_fields {            /* DSM_BARRIER, DSM_BARRIER_GO, DSM_BCAST */
    uint64_t epoch;             /* the collective's number, counted on every rank */
    uint16_t root;
    uint8_t kind;               /* COLL_* of sync.c */
    uint8_t failed;             /* DSM_BARRIER_GO: the payload is the error text */
};

struct lock_fields {            /* DSM_LOCK_* */
    uint32_t lock;
};

/* In memory (host order).  `from` is filled in by the receiver. */
struct msg {
    uint8_t type;
    uint16_t origin;            /* the rank whose call started this exchange */
    uint16_t from;
    uint32_t len;               /* payload bytes following the header */
    union {
        struct page_fields pg;
        struct coll_fields coll;
        struct lock_fields lk;
    };
};

#define MSG_WIRE_SIZE 24
#define DSM_MAX_BCAST (1u << 30)

void msg_encode(const struct msg *m, unsigned char out[MSG_WIRE_SIZE]);
void msg_decode(const unsigned char in[MSG_WIRE_SIZE], struct msg *m);
const char *msg_name(int type);

#endif
