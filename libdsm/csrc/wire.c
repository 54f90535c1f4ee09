/* Layer 0: the wire header of a message, and message names.  Nothing here
 * knows what a message means; it only lays out the fields of each family.
 *
 * Layout, big-endian: type u8 @0, a u8 @1, origin u16 @2, len u32 @4,
 * b u64 @8, c u32 @16, d u32 @20, from u16 @24, to u16 @26, where
 *   page family: a = mode, b = page,  c = count, d = flags | server << 16
 *   collectives, finalize: b = epoch, c = round
 *   locks:                 b = lock,  c = seq,   d = succ */
#define _GNU_SOURCE
#include <endian.h>
#include <string.h>
#include "proto.h"

static const char *names[DSM_MSG_MAX] = {
    [DSM_REQ] = "DSM_REQ", [DSM_FWD] = "DSM_FWD", [DSM_PAGE] = "DSM_PAGE",
    [DSM_UPDATE] = "DSM_UPDATE", [DSM_INV] = "DSM_INV", [DSM_INV_ACK] = "DSM_INV_ACK",
    [DSM_FINALIZE] = "DSM_FINALIZE", [DSM_LOCK_ACQ] = "DSM_LOCK_ACQ",
    [DSM_LOCK_GRANT] = "DSM_LOCK_GRANT", [DSM_LOCK_REL] = "DSM_LOCK_REL",
    [DSM_LOCK_NEXT] = "DSM_LOCK_NEXT", [DSM_COLL] = "DSM_COLL", [DSM_DIFF] = "DSM_DIFF",
    [DSM_DIFF_ACK] = "DSM_DIFF_ACK", [DSM_HEARTBEAT] = "DSM_HEARTBEAT", [DSM_UNPIN] = "DSM_UNPIN",
    [DSM_PLACE] = "DSM_PLACE", [DSM_LOCK_TRY] = "DSM_LOCK_TRY", [DSM_LOCK_BUSY] = "DSM_LOCK_BUSY",
    [DSM_POST] = "DSM_POST", [DSM_LOST] = "DSM_LOST", [DSM_HREQ] = "DSM_HREQ",
    [DSM_HGRANT] = "DSM_HGRANT", [DSM_HINV] = "DSM_HINV", [DSM_HINV_ACK] = "DSM_HINV_ACK",
    [DSM_HFLUSH] = "DSM_HFLUSH", [DSM_HDROP] = "DSM_HDROP", [DSM_HDONE] = "DSM_HDONE",
};

const char *msg_name(int type)
{
    return type > 0 && type < DSM_MSG_MAX ? names[type] : "unknown message";
}

/* The four generic slots of a header. */
struct slots {
    uint8_t a;
    uint64_t b;
    uint32_t c, d;
};

static int page_family(int type)
{
    return (type >= DSM_REQ && type <= DSM_INV_ACK) || type == DSM_DIFF || type == DSM_DIFF_ACK ||
           (type >= DSM_HREQ && type <= DSM_HDONE);
}

static int lock_family(int type)
{
    return (type >= DSM_LOCK_ACQ && type <= DSM_LOCK_NEXT) || type == DSM_LOCK_TRY ||
           type == DSM_LOCK_BUSY;
}

static void to_slots(const struct msg *m, struct slots *s)
{
    memset(s, 0, sizeof *s);
    if (page_family(m->type))
        *s = (struct slots){ m->pg.mode, m->pg.page, m->pg.count,
                             m->pg.flags | (uint32_t)m->pg.server << 16 };
    else if (m->type == DSM_COLL || m->type == DSM_FINALIZE)
        *s = (struct slots){ 0, m->coll.epoch, m->coll.round, 0 };
    else if (lock_family(m->type))
        *s = (struct slots){ 0, m->lk.lock, m->lk.seq, m->lk.succ };
}

/* Fields wider on the wire than in memory are checked by the receiver's
 * handler (a page number, a lock index); here they are only clamped to
 * the in-memory width, so a value out of range stays out of range. */
static void from_slots(struct msg *m, const struct slots *s)
{
    if (page_family(m->type))
        m->pg = (struct page_fields){ s->b, s->c, s->a, (uint8_t)s->d,
                                      (uint16_t)(s->d >> 16) };
    else if (m->type == DSM_COLL || m->type == DSM_FINALIZE)
        m->coll = (struct coll_fields){ s->b, s->c };
    else if (lock_family(m->type))
        m->lk = (struct lock_fields){ (uint32_t)(s->b > UINT32_MAX ? UINT32_MAX : s->b), s->c,
                                      (uint16_t)(s->d > UINT16_MAX ? UINT16_MAX : s->d) };
}

void msg_encode(const struct msg *m, unsigned char out[MSG_WIRE_SIZE])
{
    struct slots s;
    uint16_t origin = htobe16(m->origin), from = htobe16(m->from), to = htobe16(m->to);
    uint32_t len = htobe32(m->len), c, d;
    uint64_t b;
    to_slots(m, &s);
    b = htobe64(s.b);
    c = htobe32(s.c);
    d = htobe32(s.d);
    out[0] = m->type;
    out[1] = s.a;
    memcpy(out + 2, &origin, 2);
    memcpy(out + 4, &len, 4);
    memcpy(out + 8, &b, 8);
    memcpy(out + 16, &c, 4);
    memcpy(out + 20, &d, 4);
    memcpy(out + 24, &from, 2);
    memcpy(out + 26, &to, 2);
}

void msg_decode(const unsigned char in[MSG_WIRE_SIZE], struct msg *m)
{
    struct slots s;
    uint16_t origin, from, to;
    uint32_t len;
    memset(m, 0, sizeof *m);
    memcpy(&origin, in + 2, 2);
    memcpy(&len, in + 4, 4);
    memcpy(&s.b, in + 8, 8);
    memcpy(&s.c, in + 16, 4);
    memcpy(&s.d, in + 20, 4);
    memcpy(&from, in + 24, 2);
    memcpy(&to, in + 26, 2);
    m->type = in[0];
    m->origin = be16toh(origin);
    m->from = be16toh(from);
    m->to = be16toh(to);
    m->len = be32toh(len);
    s.a = in[1];
    s.b = be64toh(s.b);
    s.c = be32toh(s.c);
    s.d = be32toh(s.d);
    from_slots(m, &s);
}
