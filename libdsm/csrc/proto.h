/* The page protocol between ranks: message types and the wire header.
 * A connection carries these only after the Python handshake
 * (services/wire.py) succeeded. */
#ifndef DSM_PROTO_H
#define DSM_PROTO_H
#include <stdint.h>

enum msg_type {
    DSM_REQ = 1,        /* requester -> home: I need page (mode) */
    DSM_FWD,            /* home -> owner: serve page (mode) to origin */
    DSM_PAGE,           /* owner -> requester: page data, or a grant without data */
    DSM_UPDATE,         /* requester -> home: installed a page a third rank sent */
    DSM_INV,            /* home -> copy holder: drop your read copy */
    DSM_INV_ACK,        /* copy holder -> home: dropped */
    DSM_BARRIER,        /* rank -> rank 0: arrived at collective `page` (kind, root) */
    DSM_BARRIER_GO,     /* rank 0 -> every rank: all arrived (or the error text) */
    DSM_FINALIZE,       /* rank -> every peer: I will need nothing more */
    DSM_LOCK_ACQ,       /* rank -> lock home: I want lock `page` */
    DSM_LOCK_GRANT,     /* lock home -> rank: it is yours */
    DSM_LOCK_REL,       /* rank -> lock home: I give it back */
    DSM_BCAST,          /* root -> rank: the value of collective `page` */
    DSM_MSG_MAX
};

enum msg_mode { MODE_READ = 1, MODE_WRITE = 2 };

/* DSM_FWD arg: the requester already holds a current copy; send no data. */
#define FWD_NODATA 1
/* DSM_PAGE arg: it came from a rank other than the home; confirm to the
 * home with DSM_UPDATE once installed. */
#define PAGE_NEEDS_UPDATE 1

/* In memory (host order).  `from` is filled in by the receiver. */
struct msg {
    uint8_t type;
    uint8_t mode;
    uint16_t origin;    /* the rank whose fault started this exchange */
    uint32_t len;       /* payload bytes following the header */
    uint64_t page;
    uint64_t arg;
    uint16_t from;
};

#define MSG_WIRE_SIZE 24
#define DSM_MAX_BCAST (1u << 30)

void msg_encode(const struct msg *m, unsigned char out[MSG_WIRE_SIZE]);
void msg_decode(const unsigned char in[MSG_WIRE_SIZE], struct msg *m);
const char *msg_name(int type);

#endif
