/* Layer 2: release mode across hosts with host-shared memory (DSM_SHARE=host
 * on several hosts; coh_rc.c's model).  The leader keeps the host's
 * release-mode state (twins; the dirty, written, known, drop and served
 * pages) and does the host's memory work in its comm thread, the only
 * thread that sends the host's diffs, so that two diffs of a page reach
 * its home in order.  The host's other ranks ask it (coh_host.c has how
 * they map the host's copy, and the lowerings):
 *   flush  rank -DSM_HFLUSH-> leader (maybe itself), which lowers each
 *          dirty page to read-only on the host (DSM_HINV to the ranks
 *          mapping it, their acks), diffs it against its twin and sends
 *          it, and answers -DSM_HDONE-> once a pass found nothing dirty
 *          and every diff is applied, naming to a rank other than itself
 *          the pages whose host writes went home since that rank's last
 *          flush (below: its lock notices);
 *   drop   rank -DSM_HDROP-> leader: the pages a lock's notices named, and
 *          the rank's barrier epoch.  The leader computes a barrier's drops
 *          itself (from the notices of the other hosts' leaders); each page
 *          goes to no access on the host, its diff first if dirty (another
 *          rank's false sharing), a copy on its way once it is here; then
 *          -DSM_HDONE-> once the leader passed that barrier and no drop is
 *          left.
 * A lowering parks the work (a HOST_RESUME message to itself) until the
 * acks are in.
 *
 * A lock's notices must name every page its releaser wrote since the last
 * barrier (and those the notices it acquired named: its `known`).  A rank
 * other than the leader cannot see its own writes (a write to a page the
 * host holds read/write is a local hit), so the leader tells it: for each
 * such rank it keeps `went_home`, the pages whose host writes went home
 * (a dirty page's diff sent, or a dirty page it homes closed for writing)
 * since the DSM_HDONE of that rank's last flush, and that DSM_HDONE names
 * them; the rank adds them to its `known`.  Why that is every page it
 * wrote: the rank wrote the page while its host held it read/write, so
 * while the leader had it dirty (the page's word rises only once it is,
 * and a lowering waits for the rank's ack before the diff is taken), or
 * while the host homed it and had never served it (no other host has a
 * copy to drop: a copy served later is taken after the write).  The dirty
 * page goes home after the write and, since a flush answers only once a
 * pass found nothing dirty, before the DSM_HDONE of the rank's release:
 * so that DSM_HDONE, or one of that rank before it, names it.
 *
 * Twins are bounded by DSM_TWIN_LIMIT: a write that would twin a page over
 * it waits (a local rank's DSM_HREQ in the leader's queue, the leader's
 * own write asleep) while the leader's comm thread sends home early the
 * lowest dirty pages with a twin, as a flush sends them (lowered first),
 * until there is room for one more (DSM_HFLUSH with HOST_TRIM, the leader
 * to itself).
 *
 * The handlers run in the comm thread; DSM_HFLUSH and DSM_HDROP at a
 * leader, DSM_HDONE at any rank. */
#define _GNU_SOURCE
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

/* Ask our host's leader (maybe ourselves) for its work (caller holds
 * core.mu): 0, or TP_FULL (nothing asked). */
static int ask_host(struct coh *h, int type, int flags, const void *payload, uint32_t len)
{
    struct core *c = h->c;
    struct msg m = { .type = (uint8_t)type, .origin = (uint16_t)c->rank, .len = len,
                     .pg = { .flags = (uint8_t)flags } };
    h->rc.host_due++;               /* before sending, which drops core.mu */
    if (tp_send_app(h->t, c->leader, &m, payload) != TP_FULL)
        return 0;
    h->rc.host_due--;
    return TP_FULL;
}

int rc_host_flush(struct coh *h, int barrier)
{
    return ask_host(h, DSM_HFLUSH, barrier && coh_host_local(h->c) ? HOST_BARRIER : 0, NULL, 0);
}

/* The host's other ranks cannot flush for the next barrier before the
 * leader passed this one (their drops wait for it), so the count starts
 * afresh here. */
int rc_host_arrived(struct coh *h)
{
    if (!h->c->host_state || coh_host_local(h->c) || h->rc.host_arrived < h->c->nlocal - 1)
        return !h->c->host_state || coh_host_local(h->c);
    h->rc.host_arrived = 0;
    return 1;
}

int rc_open_host(struct coh *h, uint64_t page, int access, int write)
{
    if (coh_host_lowering(h, page) || set_has(&h->rc.dirty, page))
        return access == DSM_PROT_NONE || coh_host_lowering(h, page) ? -1 : 1;
    if (access == DSM_PROT_NONE || !write)
        return 0;
    if (rc_host_full(h, page)) {
        set_add(&h->rc.room, page);     /* served again once the trim made room */
        rc_host_trim(h, 0);
        return -1;
    }
    return rc_open_write(h, page) ? -1 : 1;
}

/* No room for one more twin (caller holds core.mu). */
static int host_over(const struct coh *h)
{
    return h->rc.twin_bytes && h->rc.twin_bytes + h->c->page_size > h->rc.limit;
}

int rc_host_full(struct coh *h, uint64_t page)
{
    return page_home(h->c, page) != h->c->rank && host_over(h);
}

int rc_host_trim(struct coh *h, int app)
{
    struct core *c = h->c;
    struct msg m = { .type = DSM_HFLUSH, .origin = (uint16_t)c->rank, .from = (uint16_t)c->rank,
                     .to = (uint16_t)c->rank, .pg = { .flags = HOST_TRIM } };
    if (h->rc.trimming)
        return 0;
    h->rc.trimming = 1;
    if (!app)
        h->t->ops->defer(h->t, &m, c->clock());
    else if (tp_send_app(h->t, c->rank, &m, NULL) == TP_FULL)
        return h->rc.trimming = 0, TP_FULL;
    return 0;
}

/* With host sharing, the host's other ranks map a page the home never
 * served read/write: before it is served, its word goes down to read-only
 * and they lower their mappings.  1 if req is parked until they did (it
 * then runs again), page by page. */
int rc_host_closes(struct coh *h, const struct msg *req, uint64_t n)
{
    uint64_t p;
    int first;
    for (p = req->pg.page; h->c->host_state && p < req->pg.page + n; p++) {
        core_lock(h->c);
        first = !set_has(&h->rc.served, p) && !set_has(&h->rc.dirty, p);
        core_unlock(h->c);
        if (first && coh_host_lower_page(h, req, p, DSM_PROT_READ))
            return 1;
    }
    return 0;
}

struct host_sync {
    uint16_t rank;
    uint16_t local;             /* its place among the host's ranks */
    uint8_t flush;              /* DSM_HFLUSH, else DSM_HDROP */
    uint8_t covered;            /* DSM_HFLUSH: a pass found nothing dirty since */
    uint64_t epoch;             /* DSM_HDROP: the barriers the leader must have passed */
    struct host_sync *next;
};

int rc_drop_begin(struct coh *h)
{
    struct core *c = h->c;
    uint64_t *buf, i, len = 8 + h->rc.drop.words * 8;
    int rc;
    if (!c->host_state)
        return 0;
    if (!(buf = malloc(len))) {
        core_fail(c, "out of memory asking to drop %llu pages",
                  (unsigned long long)h->rc.drop.count);
        return 0;
    }
    buf[0] = htole64(h->rc.epoch);
    for (i = 0; i < h->rc.drop.words; i++)
        buf[1 + i] = htole64(h->rc.drop.bits[i]);
    rc = ask_host(h, DSM_HDROP, 0, buf, (uint32_t)len);
    if (!rc && coh_host_local(c))       /* the leader's own set is the host's */
        for (i = 0; i < h->rc.drop.words; i++) {
            h->rc.drop.count -= (uint64_t)__builtin_popcountll(h->rc.drop.bits[i] &
                                                               le64toh(buf[1 + i]));
            h->rc.drop.bits[i] &= ~le64toh(buf[1 + i]);
        }
    free(buf);
    return rc;
}

/* A dirty page's host writes go home, its copy read-only on the host
 * (leader, comm thread holding core.mu): every other local rank's next
 * flush answer names it. */
static void host_send_diff(struct coh *h, uint64_t page)
{
    int i;
    rc_send_diff(h, page, 0);
    for (i = 1; i < h->c->nlocal; i++)
        set_add(&h->rc.went_home[i], page);
}

/* DSM_HDONE's payload for a flush of local rank i: the words of its
 * went_home from the first that is not 0 to the last, after that first
 * word's index (u64s), into *buf (malloc'd; NULL when empty: none); the
 * set empties.  Its length, or -1 out of memory. */
static int64_t went_home_span(struct coh *h, int i, uint64_t **buf)
{
    struct pageset *s = &h->rc.went_home[i];
    uint64_t first, last, k;
    *buf = NULL;
    if (!s->count)
        return 0;
    for (first = 0; !s->bits[first]; first++)
        ;
    for (last = s->words - 1; !s->bits[last]; last--)
        ;
    if (!(*buf = malloc((last - first + 2) * 8)))
        return -1;
    (*buf)[0] = htole64(first);
    for (k = first; k <= last; k++)
        (*buf)[1 + k - first] = htole64(s->bits[k]);
    set_clear(s);
    return (int64_t)(last - first + 2) * 8;
}

/* Answer the requests that are done (leader, comm thread holding core.mu). */
void rc_host_answer(struct coh *h)
{
    struct host_sync **pp = &h->rc.syncs, *s;
    int64_t len;
    while ((s = *pp)) {
        struct msg done = { .type = DSM_HDONE, .origin = s->rank };
        uint64_t *names = NULL;
        if (s->flush ? !s->covered || h->rc.acks_due
                     : h->rc.epoch < s->epoch || h->rc.drop.count) {
            pp = &s->next;
            continue;
        }
        if ((len = s->flush && s->local ? went_home_span(h, s->local, &names) : 0) < 0) {
            core_fail(h->c, "out of memory answering the flush of rank %d", s->rank);
            return;
        }
        *pp = s->next;
        done.len = (uint32_t)len;
        tp_send(h->t, s->rank, &done, names);
        free(names);
        free(s);
    }
}

/* Lower the host's copy of `page` to prot for the leader's work of `type`
 * and `flags` (comm thread): 1, holding core.mu, once it is so and no
 * lowering is under way; 0 if the work is parked until the local ranks'
 * acks are in. */
static int host_low(struct coh *h, int type, int flags, uint64_t page, int prot)
{
    struct core *c = h->c;
    struct msg resume = { .type = (uint8_t)type, .origin = (uint16_t)c->rank,
                          .from = (uint16_t)c->rank, .to = (uint16_t)c->rank,
                          .pg = { .page = page, .flags = (uint8_t)(HOST_RESUME | flags) } };
    uint64_t mapped;
    for (;;) {
        if (coh_host_lower_page(h, &resume, page, prot))
            return 0;
        core_lock(c);
        if (coh_host_access(c, page, &mapped) <= prot && !coh_host_lowering(h, page))
            return 1;
        core_unlock(c);             /* raised again meanwhile: lower again */
    }
}

/* DSM_HFLUSH's work: every dirty page of the host goes home.  0 if parked. */
static int host_flush_run(struct coh *h)
{
    struct core *c = h->c;
    struct host_sync *s;
    uint64_t p;
    for (;;) {
        core_lock(c);
        if ((p = set_next(&h->rc.dirty, 0)) == UINT64_MAX || core_failed(c))
            break;
        core_unlock(c);
        if (!host_low(h, DSM_HFLUSH, 0, p, DSM_PROT_READ))
            return 0;
        if (set_has(&h->rc.dirty, p))
            host_send_diff(h, p);
        coh_host_serve(h, p);
        core_unlock(c);
        core_wake(c);               /* a write of ours waiting for the lowering */
    }
    for (s = h->rc.syncs; s; s = s->next)
        s->covered |= s->flush;
    rc_host_answer(h);
    core_unlock(c);
    return 1;
}

/* HOST_TRIM's work: the lowest dirty pages with a twin go home early until
 * there is room for one more; then the writes that waited for room go on.
 * 0 if parked. */
static int host_trim_run(struct coh *h)
{
    struct core *c = h->c;
    uint64_t p;
    for (;;) {
        core_lock(c);
        for (p = set_next(&h->rc.dirty, 0); p != UINT64_MAX && !h->rc.twin[p];
             p = set_next(&h->rc.dirty, p + 1))
            ;                       /* homed here: no twin */
        if (p == UINT64_MAX || !host_over(h) || core_failed(c))
            break;
        core_unlock(c);
        if (!host_low(h, DSM_HFLUSH, HOST_TRIM, p, DSM_PROT_READ))
            return 0;
        if (set_has(&h->rc.dirty, p)) {
            c->stats.early_flushes++;
            host_send_diff(h, p);
        }
        coh_host_serve(h, p);
        core_unlock(c);
    }
    h->rc.trimming = 0;
    for (p = set_next(&h->rc.room, 0); p != UINT64_MAX; p = set_next(&h->rc.room, p + 1)) {
        set_del(&h->rc.room, p);
        coh_host_serve(h, p);       /* which may wait for room, and trim, again */
    }
    core_unlock(c);
    core_wake(c);                   /* a write of ours waiting for room */
    return 1;
}

/* DSM_HDROP's work: every page to drop goes from the host, once here.  0
 * if parked. */
static int host_drop_run(struct coh *h)
{
    struct core *c = h->c;
    uint64_t p, from = 0;
    char err[DSM_ERRLEN];
    int held;
    for (;;) {
        core_lock(c);
        for (p = set_next(&h->rc.drop, from); p != UINT64_MAX && c->pages[p].pending;
             p = set_next(&h->rc.drop, p + 1))
            ;                       /* on its way: dropped once here (host_installed) */
        if (p == UINT64_MAX || core_failed(c))
            break;
        core_unlock(c);
        from = p + 1;
        if (!host_low(h, DSM_HDROP, 0, p, DSM_PROT_NONE))
            return 0;
        if (set_has(&h->rc.drop, p) && !c->pages[p].pending) {
            if (set_has(&h->rc.dirty, p))
                host_send_diff(h, p);     /* false sharing: the host's words go home first */
            set_del(&h->rc.drop, p);
            set_del(&h->rc.refetch, p);
            held = coh_holds(c, p);
            coh_forget_closed(c, p);
            if (held && c->pages[p].prot != DSM_PROT_NONE &&
                c->mem.protect(c->mem.ctx, p, 1, DSM_PROT_NONE, err))
                core_fail(c, "%s", err);
            c->stats.invalidations += held;
            coh_host_serve(h, p);   /* a local rank's request asks the home now */
        }
        core_unlock(c);
        core_wake(c);               /* a write of ours waiting for the drop */
    }
    rc_host_answer(h);
    core_unlock(c);
    return 1;
}

/* DSM_HFLUSH, DSM_HDROP (leader, comm thread): a rank's request, the
 * leader's own trim (HOST_TRIM), or its work going on after a lowering. */
static void on_host_sync(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    struct core *c = h->c;
    struct host_sync *s;
    uint64_t epoch = 0, word, i, b;
    if (m->pg.flags & (HOST_RESUME | HOST_TRIM)) {
        if (m->from != c->rank) {
            core_fail(c, "protocol error: %s of the leader's own work from rank %d",
                      msg_name(m->type), m->from);
            return;
        }
    } else {
        for (i = 0; i < (uint64_t)c->nlocal && c->locals[i] != m->from; i++)
            ;
        if (c->leader != c->rank || i == (uint64_t)c->nlocal ||
            (m->type == DSM_HDROP && (m->len < 8 || m->len != 8 + h->rc.drop.words * 8))) {
            core_fail(c, "protocol error: %s from rank %d, not one this rank leads, or "
                      "malformed", msg_name(m->type), m->from);
            return;
        }
        if (!(s = malloc(sizeof *s))) {
            core_fail(c, "out of memory: %s from rank %d", msg_name(m->type), m->from);
            return;
        }
        if (m->type == DSM_HDROP)
            memcpy(&epoch, payload, 8);
        *s = (struct host_sync){ m->from, (uint16_t)i, m->type == DSM_HFLUSH, 0, le64toh(epoch),
                                 NULL };
        core_lock(c);
        if (m->pg.flags & HOST_BARRIER) {
            h->rc.host_arrived++;   /* our barrier's notices may be taken once all came */
            core_wake(c);
        }
        s->next = h->rc.syncs;
        h->rc.syncs = s;
        for (i = 0; m->type == DSM_HDROP && i < h->rc.drop.words; i++) {
            memcpy(&word, payload + 8 + i * 8, 8);
            for (word = le64toh(word); word; word &= word - 1) {
                b = i * 64 + (uint64_t)__builtin_ctzll(word);
                if (b < c->npages) {        /* a lock's notices at another rank of the host */
                    rc_drop_others(h, -1, b);
                    set_add(&h->rc.known, b);
                }
            }
        }
        core_unlock(c);
    }
    if (m->pg.flags & HOST_TRIM)
        host_trim_run(h);
    else if (m->type == DSM_HFLUSH)
        host_flush_run(h);
    else
        host_drop_run(h);
}

/* DSM_HDONE: one of our requests to the leader is done; a flush's names
 * the pages whose host writes went home since our last one (the words of
 * a page set from a first one on), which our lock notices name from now. */
static void on_hdone(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    struct core *c = h->c;
    uint64_t first = 0, word, k, p;
    int done;
    if (m->len)
        memcpy(&first, payload, 8);
    first = le64toh(first);
    if (m->len && (m->len < 16 || m->len % 8 || first > h->rc.known.words ||
                   (m->len - 8) / 8 > h->rc.known.words - first)) {
        core_fail(c, "protocol error: a DSM_HDONE from rank %d naming %u bytes of pages",
                  m->from, m->len);
        return;
    }
    core_lock(c);
    for (k = 0; k + 16 <= m->len; k += 8) {
        memcpy(&word, payload + 8 + k, 8);
        for (word = le64toh(word); word; word &= word - 1)
            if ((p = (first + k / 8) * 64 + (uint64_t)__builtin_ctzll(word)) < c->npages)
                set_add(&h->rc.known, p);
    }
    done = h->rc.host_due && !--h->rc.host_due;
    core_unlock(c);
    if (done)
        core_wake(c);
}

/* A page came that a drop waits for: the drop goes on. */
void rc_host_installed(struct coh *h, uint64_t page)
{
    struct core *c = h->c;
    struct msg resume = { .type = DSM_HDROP, .origin = (uint16_t)c->rank,
                          .from = (uint16_t)c->rank, .to = (uint16_t)c->rank,
                          .pg = { .page = page, .flags = HOST_RESUME } };
    if (set_has(&h->rc.drop, page))
        h->t->ops->defer(h->t, &resume, c->clock());
}

int rc_host_init(struct coh *h)
{
    struct core *c = h->c;
    int i;
    if (!c->host_state)
        return 0;
    tp_register(h->t, DSM_HDONE, on_hdone, h, (uint32_t)(8 + h->rc.known.words * 8));
    if (coh_host_local(c))
        return 0;
    tp_register(h->t, DSM_HFLUSH, on_host_sync, h, 0);
    tp_register(h->t, DSM_HDROP, on_host_sync, h, (uint32_t)(8 + h->rc.drop.words * 8));
    if (set_init(&h->rc.room, c->npages) ||
        !(h->rc.went_home = calloc((size_t)c->nlocal, sizeof *h->rc.went_home)))
        return -1;
    for (i = 1; i < c->nlocal; i++)
        if (set_init(&h->rc.went_home[i], c->npages))
            return -1;
    return 0;
}

void rc_host_free(struct coh *h)
{
    int i;
    while (h->rc.syncs) {
        struct host_sync *s = h->rc.syncs;
        h->rc.syncs = s->next;
        free(s);
    }
    for (i = 1; h->rc.went_home && i < h->c->nlocal; i++)
        free(h->rc.went_home[i].bits);
    free(h->rc.went_home);
    free(h->rc.room.bits);
}
