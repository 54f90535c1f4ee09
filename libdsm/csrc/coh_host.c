/* Layer 2: coherence across hosts with host-shared memory (DSM_SHARE=host
 * on several hosts).  The protocol of the mode (coh_sc.c; coh_rc.c with
 * coh_rchost.c) runs between the host leaders: homes go round-robin over
 * them, and the directory's owner and copyset name leaders, so a page
 * crosses the network once per host.  Each page's word in the host's shared memory
 * (hostmem.h) says what the host holds and which of its other ranks map
 * it; coherence.h has the three exchanges.
 *
 * Why it is safe: the word's access and its bits change together, by
 * compare-and-swap.  A rank sets its bit only while the access allows what
 * it maps, and maps under its core.mu; the leader lowers the access first,
 * and then waits for an ack from every rank whose bit it saw, each of which
 * lowers its mapping under its core.mu.  So a rank either set its bit
 * before the lowering (and is asked to lower) or sees the access lowered
 * (and asks its leader).  The ranks beyond the bits share HOST_OVERFLOW:
 * while it is set every one of them is asked, and only a lowering to no
 * access clears it, in the same compare-and-swap that lowers the access,
 * so none can set it meanwhile.  When the page or the DSM_INV_ACK leaves
 * the host, no rank of the host maps it above what the host keeps, and no
 * rank of a host that lost a page can still access it.  The leader's own view
 * follows the protocol, as any rank's in per-rank mode.
 *
 * Handlers: DSM_HREQ and DSM_HINV_ACK run at the leader, DSM_HGRANT and
 * DSM_HINV at the host's other ranks, each in whichever thread plays the
 * comm thread (coherence.h), under core.mu. */
#define _GNU_SOURCE
#include <stdlib.h>
#include "coherence.h"
#include "hostmem.h"

/* A local rank's DSM_HREQ, waiting at its leader for the host to hold the page. */
struct host_wait {
    uint64_t page;
    uint16_t rank;
    uint8_t mode;
    struct host_wait *next;
};

/* A message waiting at the leader for the local ranks' acks of a lowering
 * of `page` (a DSM_FWD or DSM_INV in sequential mode, a DSM_REQ in release
 * mode), or queued behind one (acks 0). */
struct host_lowering {
    struct msg m;
    uint64_t page;
    uint32_t acks;              /* still to come */
    struct host_lowering *next;
};

/* ---------------------------------------------------------- the word */

/* The word of a page, the initial state spelt out (hostmem.h). */
static uint64_t word_of(const struct core *c, uint64_t page, uint64_t raw)
{
    if (raw)
        return raw;
    if (page_home(c, page) == c->leader)
        return HOST_WORD_SET | (uint64_t)DSM_PROT_RW << HOST_ACCESS_SHIFT;
    return HOST_WORD_SET;
}

static int word_access(uint64_t w)
{
    return (int)(w >> HOST_ACCESS_SHIFT & 3);
}

static int allows(int access, int write)
{
    return access == DSM_PROT_RW || (!write && access == DSM_PROT_READ);
}

/* Set the word's access to prot (keeping its bits) when `lower` says so:
 * the word as it was.  A lowering to no access clears HOST_OVERFLOW too:
 * it asks every rank beyond the bits to drop the page. */
static uint64_t word_set_access(struct core *c, uint64_t page, int prot, int lower)
{
    uint64_t *w = &c->host_state[page], raw = __atomic_load_n(w, __ATOMIC_ACQUIRE), old, new;
    do {
        old = word_of(c, page, raw);
        if (lower && word_access(old) <= prot)
            return old;
        new = (old & ~(3ULL << HOST_ACCESS_SHIFT)) | (uint64_t)prot << HOST_ACCESS_SHIFT;
        if (lower && prot == DSM_PROT_NONE)
            new &= ~HOST_OVERFLOW;
    } while (!__atomic_compare_exchange_n(w, &raw, new, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    return old;
}

int coh_host_access(const struct core *c, uint64_t page, uint64_t *mapped)
{
    uint64_t w = word_of(c, page, __atomic_load_n(&c->host_state[page], __ATOMIC_ACQUIRE));
    *mapped = w & HOST_MAPPERS;
    return word_access(w);
}

/* ---------------------------------------------------------- a local rank */

/* Map the page if the host holds it well enough: set our bit (or
 * HOST_OVERFLOW, beyond the bits), then protect (caller holds core.mu, so
 * a DSM_HINV for it waits behind us).
 * 1 if it is mapped, 0 if the leader must be asked. */
static int local_hit(struct coh *h, uint64_t page, int write)
{
    struct core *c = h->c;
    uint64_t *w = &c->host_state[page], raw = __atomic_load_n(w, __ATOMIC_ACQUIRE), old;
    char err[DSM_ERRLEN];
    do {
        old = word_of(c, page, raw);
        if (!allows(word_access(old), write))
            return 0;
    } while (!__atomic_compare_exchange_n(w, &raw, old | host_bit(c->local_index), 0,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    if (c->mem.protect(c->mem.ctx, page, 1, word_access(old), err)) {
        core_fail(c, "%s", err);
        return 1;
    }
    c->stats.host_maps += !c->pages[page].granted;
    c->pages[page].granted = 0;
    return 1;
}

/* Ask the leader (caller holds core.mu, which sending drops): tp_send_app's bits. */
static int ask_leader(struct coh *h, uint64_t page, int write)
{
    struct core *c = h->c;
    struct msg m = { .type = DSM_HREQ, .origin = (uint16_t)c->rank,
                     .pg = { .page = page, .mode = write ? MODE_WRITE : MODE_READ } };
    int rc;
    *(write ? &c->stats.write_faults : &c->stats.read_faults) += 1;
    c->pages[page].pending = m.pg.mode;
    if ((rc = tp_send_app(h->t, c->leader, &m, NULL)) == TP_FULL)
        c->pages[page].pending = 0;
    return rc;
}

enum coh_step coh_host_fault(struct coh *h, uint64_t page, int write)
{
    struct core *c = h->c;
    int rc;
    if (local_hit(h, page, write))
        return COH_AGAIN;
    if (c->pages[page].pending)
        return COH_WAIT;
    if ((rc = ask_leader(h, page, write)) == TP_FULL)
        return COH_FULL;
    return c->pages[page].pending ? COH_WAIT : COH_AGAIN;
}

int coh_host_request(struct coh *h, uint64_t page, int write)
{
    if (local_hit(h, page, write))
        return TP_DROPPED;      /* look again: it is mapped */
    if (h->c->pages[page].pending)
        return 0;
    return ask_leader(h, page, write);
}

/* DSM_HGRANT: the host holds the page; the faulting thread maps it. */
static void on_hgrant(struct coh *h, const struct msg *m)
{
    core_lock(h->c);
    h->c->pages[m->pg.page].pending = 0;
    h->c->pages[m->pg.page].granted = 1;
    core_unlock(h->c);
    core_wake(h->c);
}

/* DSM_HINV: lower our mapping (dropping it: our bit too, where we have
 * one; HOST_OVERFLOW is the leader's to clear), then ack.  A rank beyond
 * the bits is asked whether or not it maps the page.  A pinned page waits
 * until it is unpinned (coh_pin.c), and so does the leader's DSM_FWD or
 * DSM_INV. */
static void on_hinv(struct coh *h, const struct msg *m)
{
    struct core *c = h->c;
    struct msg ack = { .type = DSM_HINV_ACK, .origin = m->origin, .pg = { .page = m->pg.page } };
    int prot = m->pg.mode == MODE_READ ? DSM_PROT_READ : DSM_PROT_NONE, above;
    uint64_t bit = host_bit(c->local_index);
    char err[DSM_ERRLEN];
    if (coh_park(h, m))
        return;
    core_lock(c);
    above = c->pages[m->pg.page].prot > prot;
    if (above && c->mem.protect(c->mem.ctx, m->pg.page, 1, prot, err)) {
        core_unlock(c);
        core_fail(c, "%s", err);
        return;
    }
    if (prot == DSM_PROT_NONE && bit != HOST_OVERFLOW)
        __atomic_fetch_and(&c->host_state[m->pg.page], ~bit, __ATOMIC_ACQ_REL);
    c->stats.invalidations += above || bit != HOST_OVERFLOW;
    tp_send(h->t, c->leader, &ack, NULL);
    core_unlock(c);
}

/* ---------------------------------------------------------- the leader */

/* Ask the page's home for the host, as a fault here would (comm thread,
 * holding core.mu), unless a request is out already. */
static void leader_fetch(struct coh *h, uint64_t page, int mode)
{
    struct core *c = h->c;
    struct msg m = { .type = DSM_REQ, .origin = (uint16_t)c->rank,
                     .pg = { .page = page, .count = 1, .mode = (uint8_t)mode } };
    if (c->pages[page].pending || c->pages[page].leaving)
        return;
    c->pages[page].pending = (uint8_t)mode;
    tp_send(h->t, page_home(c, page), &m, NULL);
}

/* Answer the waiters of a page that the host holds well enough now.  A
 * write where the host holds a readable copy the model may open here
 * (release: the leader twins it), the word raised only then; the other
 * waiters ask again (a write, where the host got a read copy). */
static void serve_waiters(struct coh *h, uint64_t page)
{
    struct core *c = h->c;
    struct host_wait **pp = &h->host_waits, *w;
    int access = word_access(word_of(c, page, __atomic_load_n(&c->host_state[page],
                                                              __ATOMIC_ACQUIRE))), opened;
    while ((w = *pp)) {
        struct msg grant = { .type = DSM_HGRANT, .origin = w->rank, .pg = { .page = page } };
        if (w->page != page) {
            pp = &w->next;
            continue;
        }
        if (!allows(access, w->mode == MODE_WRITE)) {
            opened = h->proto->open_host(h, page, access, w->mode == MODE_WRITE);
            if (!opened)
                leader_fetch(h, page, w->mode);
            if (opened <= 0) {
                pp = &w->next;
                continue;
            }
            word_set_access(c, page, access = DSM_PROT_RW, 0);
        }
        *pp = w->next;
        tp_send(h->t, w->rank, &grant, NULL);
        free(w);
    }
}

/* DSM_HREQ: grant at once if the host holds the page so; else wait for
 * it, asking its home if no request is out. */
static void on_hreq(struct coh *h, const struct msg *m)
{
    struct core *c = h->c;
    struct host_wait *w;
    if (c->leader != c->rank || m->from == c->rank ||
        (m->pg.mode != MODE_READ && m->pg.mode != MODE_WRITE)) {
        core_fail(c, "protocol error: DSM_HREQ from rank %d for page %llu, not a rank this "
                  "one leads", m->from, (unsigned long long)m->pg.page);
        return;
    }
    if (!(w = malloc(sizeof *w))) {
        core_fail(c, "out of memory: DSM_HREQ from rank %d for page %llu", m->from,
                  (unsigned long long)m->pg.page);
        return;
    }
    *w = (struct host_wait){ m->pg.page, m->from, m->pg.mode, NULL };
    core_lock(c);
    w->next = h->host_waits;
    h->host_waits = w;
    serve_waiters(h, m->pg.page);
    core_unlock(c);
}

void coh_host_installed(struct coh *h, const struct batched *b, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++)
        if (!b[i].stale) {
            word_set_access(h->c, b[i].page, b[i].prot, 0);
            coh_host_serve(h, b[i].page);
            h->proto->host_installed(h, b[i].page);
        }
}

/* Lower the host's copy of `page` to prot before m goes on: 1 if m is
 * parked until the local ranks' acks are in, or (with `queue`) behind a
 * lowering of the page already under way; 0 to go on now.  The ranks
 * asked are those whose bit the word had, and with HOST_OVERFLOW every
 * rank beyond the bits. */
static int lower(struct coh *h, const struct msg *m, uint64_t page, int prot, int queue)
{
    struct core *c = h->c;
    struct host_lowering *l, **tail;
    struct msg hinv = { .type = DSM_HINV, .origin = m->origin,
                        .pg = { .page = page, .mode = prot == DSM_PROT_READ ? MODE_READ : 0 } };
    uint64_t old, targets;
    uint32_t acks = 0;
    int i, busy;
    if (!c->host_state)
        return 0;
    core_lock(c);
    busy = coh_host_lowering(h, page);
    if (busy && !queue) {       /* the home serves one write or one read from us at a time */
        core_unlock(c);
        core_fail(c, "protocol error: %s for page %llu while the host lowers it",
                  msg_name(m->type), (unsigned long long)page);
        return 1;
    }
    /* run again once acked, the word is low already: no second round */
    old = busy ? 0 : word_set_access(c, page, prot, 1);
    targets = word_access(old) > prot ? old & HOST_MAPPERS : 0;
    for (i = 1; i < c->nlocal; i++)
        acks += (targets & host_bit(i)) != 0;
    if (!busy && !acks) {
        core_unlock(c);
        return 0;
    }
    if (!(l = malloc(sizeof *l))) {
        core_unlock(c);
        core_fail(c, "out of memory lowering page %llu", (unsigned long long)page);
        return 1;
    }
    *l = (struct host_lowering){ *m, page, acks, NULL };
    for (tail = &h->lowerings; *tail; tail = &(*tail)->next)
        ;
    *tail = l;                  /* in order: one queued runs after the lowering it waits for */
    for (i = 1; i < c->nlocal; i++)
        if (targets & host_bit(i))
            tp_send(h->t, c->locals[i], &hinv, NULL);
    core_unlock(c);
    return 1;
}

int coh_host_lower(struct coh *h, const struct msg *m, int prot)
{
    return lower(h, m, m->pg.page, prot, 0);
}

int coh_host_lower_page(struct coh *h, const struct msg *m, uint64_t page, int prot)
{
    return lower(h, m, page, prot, 1);
}

int coh_host_lowering(const struct coh *h, uint64_t page)
{
    const struct host_lowering *l;
    for (l = h->lowerings; l && l->page != page; l = l->next)
        ;
    return l != NULL;
}

void coh_host_serve(struct coh *h, uint64_t page)
{
    if (h->host_waits)
        serve_waiters(h, page);
}

void coh_host_raise(struct coh *h, uint64_t page)
{
    if (h->c->host_state)
        word_set_access(h->c, page, DSM_PROT_RW, 0);
}

/* DSM_HINV_ACK: once every local rank lowered, the parked message runs
 * again (through the transport's deferred queue) and goes on, and so do
 * those queued behind it. */
static void on_hinv_ack(struct coh *h, const struct msg *m)
{
    struct core *c = h->c;
    struct host_lowering **pp, *l, *done = NULL, **dtail = &done;
    core_lock(c);
    for (pp = &h->lowerings; (l = *pp) && !(l->page == m->pg.page && l->acks); pp = &l->next)
        ;
    if (l && !--l->acks) {
        for (pp = &h->lowerings; (l = *pp);) {
            if (l->page == m->pg.page && !l->acks) {
                *pp = l->next;
                *dtail = l;
                dtail = &l->next;
                l->next = NULL;
            } else {
                pp = &l->next;
            }
        }
    }
    core_unlock(c);
    if (!l && !done) {
        core_fail(c, "protocol error: DSM_HINV_ACK from rank %d for page %llu, which is not "
                  "being lowered", m->from, (unsigned long long)m->pg.page);
        return;
    }
    while ((l = done)) {
        done = l->next;
        h->t->ops->defer(h->t, &l->m, c->clock());
        free(l);
    }
}

/* ---------------------------------------------------------- the table */

static void on_message(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    if (!coh_arrived(h, m))
        return;
    switch (m->type) {
    case DSM_HREQ: on_hreq(h, m); break;
    case DSM_HGRANT: on_hgrant(h, m); break;
    case DSM_HINV: on_hinv(h, m); break;
    case DSM_HINV_ACK: on_hinv_ack(h, m); break;
    }
}

void coh_host_init(struct coh *h)
{
    static const int leader[] = { DSM_HREQ, DSM_HINV_ACK }, local[] = { DSM_HGRANT, DSM_HINV };
    const int *types = coh_host_local(h->c) ? local : leader;
    unsigned i;
    if (!h->c->host_state)
        return;
    for (i = 0; i < 2; i++)
        tp_register(h->t, types[i], on_message, h, 0);
}

void coh_host_free(struct coh *h)
{
    while (h->host_waits) {
        struct host_wait *w = h->host_waits;
        h->host_waits = w->next;
        free(w);
    }
    while (h->lowerings) {
        struct host_lowering *l = h->lowerings;
        h->lowerings = l->next;
        free(l);
    }
}
