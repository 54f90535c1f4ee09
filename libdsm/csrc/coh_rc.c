/* Layer 2: coherence in release mode, home-based with multiple writers
 * (after HLRC and ArgoDSM).  The home's copy of a page is the master.
 *
 *  read fault   R -REQ-> home -PAGE-> R, a copy taken as it is now
 *  write fault  no message: a page not homed here gets a twin (its words
 *               at the first write), and opens for writing
 *  release      every page written since the last release goes home as
 *               a diff (the words that differ from the twin; DSM_DIFF,
 *               DSM_DIFF_ACK), and closes for writing again
 *  acquire      drop the cached copies that the write notices name
 *
 * The home writes its pages without noting it while nobody else has a
 * copy: a page it never served stays writable.  Once served, its writes
 * are noted like anyone's.  (Every copy of a noted page is dropped at the
 * next barrier, but a rank that finished the barrier first may fetch it
 * again before the home is done, so a home never forgets that it served a
 * page; only a page whose home moves starts afresh.)
 *
 * Homes follow single writers: a page that one rank alone wrote between two
 * barriers (as a rank's own band of an array) has that rank for its home
 * after the second, so its later writes need no diff.  Every rank decides
 * it from the same notices, so the ranks' home tables stay the same.
 *
 * Write notices: `written` holds the pages this rank wrote since the last
 * barrier, `known` those it knows were written by anyone (its own and the
 * notices locks brought it).  A barrier exchanges `written` among all
 * ranks; a lock carries its releaser's `known` to the next holder.  Both
 * start afresh at each barrier, and a lock's notices name the barrier
 * epoch they belong to, so notices from before a barrier are ignored.
 *
 * Application threads run all of this under core.mu; only DSM_DIFF (at
 * the home) and DSM_DIFF_ACK run in the comm thread.  With host sharing
 * across hosts, homes follow single writing hosts (their leaders), and a
 * host's leader keeps the host's twins and sends its diffs (coh_rchost.c). */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

#define NOTICES_MAX 65536           /* past that, a lock says "every page" */
#define ALL_PAGES UINT64_MAX

/* ---------------------------------------------------------- page sets */

#define FOR_EACH(s, p) for (p = set_next(s, 0); p != UINT64_MAX; p = set_next(s, p + 1))

static int mine(const struct coh *h, uint64_t page)
{
    return page_home(h->c, page) == h->c->rank;
}

/* A write to a readable copy opens here (coh_proto.open_here): the first
 * write of the interval to a page not homed here takes a twin.  Anything
 * else asks the home; a host's other ranks ask their leader, who keeps the
 * host's twins (coh_host.c).  Twins are bounded: per rank, a page goes
 * home early from this thread; with host sharing only the leader's comm
 * thread sends diffs, so the write waits while it sends some early. */
static enum coh_step rc_open_here(struct coh *h, uint64_t page, int write)
{
    struct core *c = h->c;
    uint64_t p;
    if (!write || c->pages[page].prot != DSM_PROT_READ || coh_host_local(c))
        return COH_ASK;
    /* A host's copy being lowered, or dropped (a copy may be on its way,
     * which would overwrite a write): the comm thread wakes us once done. */
    if (c->host_state &&
        (coh_host_lowering(h, page) || coh_host_access(c, page, &p) == DSM_PROT_NONE))
        return COH_WAIT;
    if (c->host_state && rc_host_full(h, page))
        return rc_host_trim(h, 1) == TP_FULL ? COH_FULL : COH_WAIT;
    while (!mine(h, page) && !c->host_state &&
           h->rc.twin_bytes + c->page_size > h->rc.limit &&
           (p = set_next(&h->rc.dirty, 0)) != UINT64_MAX) {
        c->stats.early_flushes++;
        rc_send_diff(h, p, 1);      /* twins are bounded: one page goes home early */
        if (c->pages[page].prot != DSM_PROT_READ)
            return COH_AGAIN;       /* core.mu was dropped: look again */
    }
    if (rc_open_write(h, page))
        return COH_WAIT;
    coh_host_raise(h, page);        /* the twin exists: the host may write */
    if (rc_set_prot(h, page, DSM_PROT_RW))
        return COH_WAIT;
    c->stats.invalidations_saved++;     /* sequential mode would have asked the home */
    return COH_DONE;
}

int rc_flush(struct coh *h, int barrier)
{
    uint64_t p;
    if (h->c->host_state)
        return rc_host_flush(h, barrier);
    while ((p = set_next(&h->rc.dirty, 0)) != UINT64_MAX && !core_failed(h->c))
        rc_send_diff(h, p, 1);
    return 0;
}

int rc_flushed(struct coh *h)
{
    return h->c->host_state ? !h->rc.host_due : !h->rc.acks_due;
}

/* ---------------------------------------------------------- notices */

/* Pages as (u64 epoch, u64 page...): `written` for a barrier, `known` for
 * a lock, or (epoch, ALL_PAGES) when there are too many. */
int rc_notices(struct coh *h, int for_lock, unsigned char **out, uint64_t *len)
{
    const struct pageset *s = for_lock ? &h->rc.known : &h->rc.written;
    int all = s->count > NOTICES_MAX || (for_lock && h->rc.known_all);
    uint64_t n = all ? 1 : s->count, *w, p, i = 1;
    if (!(w = malloc((n + 1) * 8)))
        return -1;
    w[0] = htole64(h->rc.epoch);
    if (all)
        w[i++] = htole64(ALL_PAGES);
    else
        FOR_EACH(s, p)
            w[i++] = htole64(p);
    *out = (unsigned char *)w;
    *len = i * 8;
    return 0;
}

/* Call fn(h, rank, p) for the page a notice names: one page of the region,
 * or every page for ALL_PAGES.  Notices naming no page are ignored. */
static void each_page(struct coh *h, int rank, uint64_t page,
                      void (*fn)(struct coh *, int, uint64_t))
{
    uint64_t p;
    if (page == ALL_PAGES)
        for (p = 0; p < h->c->npages; p++)
            fn(h, rank, p);
    else if (page < h->c->npages)
        fn(h, rank, page);
}

static void note_known(struct coh *h, int rank, uint64_t page)
{
    set_add(&h->rc.known, page);
}

void rc_acquire(struct coh *h, const unsigned char *blob, uint64_t len)
{
    uint64_t epoch, p, i;
    if (len < 8)
        return;
    memcpy(&epoch, blob, 8);
    if (le64toh(epoch) != h->rc.epoch)
        return;                     /* from before a barrier this rank has passed */
    for (i = 8; i + 8 <= len; i += 8) {
        memcpy(&p, blob + i, 8);
        p = le64toh(p);
        each_page(h, -1, p, rc_drop_others);    /* some earlier holder wrote it */
        if (p == ALL_PAGES)
            set_clear(&h->rc.known), h->rc.known_all = 1;
        else
            each_page(h, -1, p, note_known);
    }
}

#define NOBODY 0xffff
#define SEVERAL 0xfffe

/* Call fn(h, rank, page) for every page of every rank's notices. */
static void each_notice(struct coh *h, const unsigned char *gathered, uint64_t len,
                        void (*fn)(struct coh *, int, uint64_t))
{
    uint32_t tag[2];
    uint64_t at = 0, p, i;
    while (at + 8 <= len) {
        memcpy(tag, gathered + at, 8);
        at += 8;
        for (i = 8; i + 8 <= le32toh(tag[1]); i += 8) {
            memcpy(&p, gathered + at + i, 8);
            each_page(h, (int)le32toh(tag[0]), le64toh(p), fn);
        }
        at += le32toh(tag[1]);
    }
}

static void note_writer(struct coh *h, int rank, uint64_t page)
{
    uint16_t *w = h->rc.writer;
    w[page] = w[page] == NOBODY || w[page] == rank ? (uint16_t)rank : SEVERAL;
}

/* A page one rank alone wrote moves its home there (with host sharing
 * across hosts, one host alone: only leaders give notices, and every rank
 * switches its table).  An untouched page word keeps its meaning
 * (hostmem.h: read/write on the home's host, else no access): the old home
 * served the page (another host wrote it), which set its word, and the new
 * home's host wrote it, which set its own. */
static void move_home(struct coh *h, int rank, uint64_t page)
{
    uint16_t *w = h->rc.writer;
    if (w[page] < SEVERAL && h->c->homes[page] != w[page]) {
        h->c->homes[page] = w[page];
        h->c->stats.homes_moved++;
        /* Every other copy goes at this barrier, and one served to a rank
         * ahead of us is marked already: unless so, we may write it unnoted
         * (the host's other ranks too: its word first). */
        if (w[page] != h->c->rank) {
            set_del(&h->rc.served, page);
        } else if (!set_has(&h->rc.served, page)) {
            coh_host_raise(h, page);
            rc_set_prot(h, page, DSM_PROT_RW);
        }
    }
    w[page] = NOBODY;
}

void rc_barrier(struct coh *h, const unsigned char *gathered, uint64_t len)
{
    each_notice(h, gathered, len, note_writer);
    each_notice(h, gathered, len, move_home);
    if (!coh_host_local(h->c))      /* the leader drops for the host */
        each_notice(h, gathered, len, rc_drop_others);
    set_clear(&h->rc.written);
    set_clear(&h->rc.known);
    h->rc.known_all = 0;
    h->rc.epoch++;
}

/* Drop what the notices named; a copy still on its way is dropped once it
 * is here.  A page this rank wrote too (false sharing) it will likely write
 * again, so it is asked for again at once: the faults that follow find it
 * on its way.  1 when nothing is left. */
int rc_drop_step(struct coh *h)
{
    struct core *c = h->c;
    uint64_t p;
    int held;
    if (c->host_state)
        return !h->rc.host_due;
    FOR_EACH(&h->rc.drop, p) {
        if (c->pages[p].pending)
            continue;
        /* False sharing: our words go home first (and the twin).  Sending
         * drops core.mu, and another thread may write the page again
         * meanwhile: then its words go too, before the copy is dropped. */
        while (set_has(&h->rc.dirty, p))
            rc_send_diff(h, p, 1);
        set_del(&h->rc.drop, p);
        held = coh_holds(c, p);
        coh_forget_closed(c, p);
        if (held && (c->pages[p].prot == DSM_PROT_NONE || !rc_set_prot(h, p, DSM_PROT_NONE))) {
            c->stats.invalidations++;
            if (set_has(&h->rc.refetch, p))
                coh_refetch(h, p);
        }
        set_del(&h->rc.refetch, p);
    }
    return !h->rc.drop.count;
}

/* ---------------------------------------------------------- the home's side */

/* Is this rank the page's home, or about to be?  A home moves here at a
 * barrier for a page this rank alone wrote; a rank that finished that
 * barrier first may already ask us for it, or send us its next diff.  Our
 * copy is the current one meanwhile (we wrote it, nobody else did), so we
 * can serve it, and take the diff, as the home.  Caller holds core.mu. */
static int home_or_heir(struct coh *h, uint64_t page)
{
    return mine(h, page) || set_has(&h->rc.written, page);
}

/* DSM_REQ, DSM_DIFF (comm thread): may this rank serve pages [page,
 * page + n) as their home? */
static int rc_serves(struct coh *h, uint64_t page, uint64_t n)
{
    uint64_t i;
    int ok = page < h->c->npages && n <= h->c->npages - page;
    core_lock(h->c);
    for (i = 0; ok && i < n; i++)
        ok = home_or_heir(h, page + i);
    core_unlock(h->c);
    return ok;
}

/* DSM_DIFF: apply the words, word by word, and acknowledge. */
static void on_diff(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    struct core *c = h->c;
    struct msg ack = { .type = DSM_DIFF_ACK, .origin = m->origin, .pg = { .page = m->pg.page } };
    uint64_t at = 0, words = c->page_size / 8;
    unsigned char *page = c->rw + m->pg.page * c->page_size;
    uint32_t head[2];
    if (!rc_serves(h, m->pg.page, 1)) {
        core_fail(c, "protocol error: DSM_DIFF from rank %d for page %llu, not homed here",
                  m->from, (unsigned long long)m->pg.page);
        return;
    }
    while (at + 8 <= m->len) {
        memcpy(head, payload + at, 8);
        head[0] = le32toh(head[0]);
        head[1] = le32toh(head[1]);
        if (head[0] > words || head[1] > words - head[0] || at + 8 + head[1] * 8ULL > m->len) {
            core_fail(c, "protocol error: a bad DSM_DIFF from rank %d", m->from);
            return;
        }
        rc_copy_words(page + head[0] * 8, payload + at + 8, head[1] * 8ULL);
        at += 8 + head[1] * 8ULL;
    }
    tp_send(h->t, m->from, &ack, NULL);
}

static void on_diff_ack(void *ctx, const struct msg *m, const unsigned char *payload)
{
    struct coh *h = ctx;
    int all;
    core_lock(h->c);
    all = h->rc.acks_due && !--h->rc.acks_due;
    if (all && h->rc.syncs)
        rc_host_answer(h);
    core_unlock(h->c);
    if (all)
        core_wake(h->c);
}

/* A read request at the home: a copy of the master as it is now, a run of
 * pages per message.  A page served for the first time is closed for
 * writing first, so the home's writes from then on are noted.  The copy
 * is taken word by word: the home's own threads may be writing. */
static void rc_serve(struct coh *h, const struct msg *req)
{
    struct core *c = h->c;
    uint64_t i, p, k, n = req->pg.count ? req->pg.count : 1;
    unsigned char *copy;
    if (rc_host_closes(h, req, n))
        return;
    if (!(copy = malloc((n < RUN_MAX ? n : RUN_MAX) * c->page_size))) {
        core_fail(c, "out of memory serving page %llu", (unsigned long long)req->pg.page);
        return;
    }
    for (i = 0; i < n; i += k) {
        struct msg out = { .type = DSM_PAGE, .origin = req->origin,
                           .pg = { .page = req->pg.page + i, .mode = MODE_READ } };
        k = n - i < RUN_MAX ? n - i : RUN_MAX;
        out.len = (uint32_t)(k * c->page_size);
        out.pg.count = (uint32_t)k;
        core_lock(c);
        for (p = out.pg.page; p < out.pg.page + k; p++) {
            if (!set_has(&h->rc.served, p)) {
                set_add(&h->rc.served, p);
                if (c->pages[p].prot == DSM_PROT_RW && !set_has(&h->rc.dirty, p))
                    rc_set_prot(h, p, DSM_PROT_READ);
            }
            rc_copy_words(copy + (p - out.pg.page) * c->page_size, c->rw + p * c->page_size,
                       c->page_size);
            coh_host_serve(h, p);   /* a write waiting for the first serve's lowering */
        }
        core_unlock(c);
        tp_send(h->t, req->origin, &out, copy);
    }
    free(copy);
}

/* ---------------------------------------------------------- the model */

/* No directory: only requests and pages, and the diffs. */
static int rc_init(struct coh *h, uint64_t limit, char *err)
{
    struct core *c = h->c;
    struct rc *rc = &h->rc;
    uint64_t p;
    rc->limit = limit;
    if (!(rc->writer = malloc(c->npages * sizeof *rc->writer)) ||
        !(rc->twin = calloc(c->npages, sizeof *rc->twin)) || set_init(&rc->dirty, c->npages) ||
        set_init(&rc->written, c->npages) || set_init(&rc->known, c->npages) ||
        set_init(&rc->drop, c->npages) || set_init(&rc->refetch, c->npages) ||
        set_init(&rc->served, c->npages) || rc_host_init(h))
        return dsm_err_sys(err, ENOMEM, "release-mode state for %llu pages",
                           (unsigned long long)c->npages);
    for (p = 0; p < c->npages; p++)
        rc->writer[p] = NOBODY;
    tp_register(h->t, DSM_DIFF, on_diff, h, (uint32_t)(2 * c->page_size));
    tp_register(h->t, DSM_DIFF_ACK, on_diff_ack, h, 0);
    return DSM_OK;
}

static void rc_free(struct coh *h)
{
    uint64_t p;
    rc_host_free(h);
    if (h->rc.twin)
        for (p = 0; p < h->c->npages; p++)
            free(h->rc.twin[p]);
    free(h->rc.twin);
    free(h->rc.writer);
    free(h->rc.dirty.bits);
    free(h->rc.written.bits);
    free(h->rc.known.bits);
    free(h->rc.drop.bits);
    free(h->rc.refetch.bits);
    free(h->rc.served.bits);
    memset(&h->rc, 0, sizeof h->rc);
}

/* A fault asks for a readable copy, which a write then opens here. */
static int rc_asks_write(int write)
{
    return 0;
}

/* The home keeps no directory: nothing to confirm. */
static int rc_confirms(const struct core *c, uint64_t page, int from)
{
    return 0;
}

/* The home serves each request at once: nothing batched. */
static void rc_flush_batch(struct coh *h, int type)
{
}

const struct coh_proto coh_release = {
    .name = "release",
    .init = rc_init,
    .free = rc_free,
    .asks_write = rc_asks_write,
    .open_here = rc_open_here,
    .open_host = rc_open_host,
    .host_installed = rc_host_installed,
    .confirms = rc_confirms,
    .serves = rc_serves,
    .request = rc_serve,
    .flush = rc_flush_batch,
};
