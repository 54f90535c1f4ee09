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
 * the home) and DSM_DIFF_ACK run in the comm thread. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

#define NOTICES_MAX 65536           /* past that, a lock says "every page" */
#define ALL_PAGES UINT64_MAX

/* ---------------------------------------------------------- page sets */

static int set_init(struct pageset *s, uint64_t npages)
{
    s->count = 0;
    s->words = (npages + 63) / 64;
    s->bits = calloc(s->words ? s->words : 1, sizeof *s->bits);
    return s->bits ? 0 : -1;
}

static int set_has(const struct pageset *s, uint64_t p)
{
    return s->bits[p / 64] >> (p % 64) & 1;
}

static void set_add(struct pageset *s, uint64_t p)
{
    if (!set_has(s, p))
        s->bits[p / 64] |= 1ULL << (p % 64), s->count++;
}

static void set_del(struct pageset *s, uint64_t p)
{
    if (set_has(s, p))
        s->bits[p / 64] &= ~(1ULL << (p % 64)), s->count--;
}

static void set_clear(struct pageset *s)
{
    memset(s->bits, 0, s->words * sizeof *s->bits);
    s->count = 0;
}

/* The first page of the set at or after p, or UINT64_MAX. */
static uint64_t set_next(const struct pageset *s, uint64_t p)
{
    uint64_t w = p / 64, bits;
    if (w >= s->words)
        return UINT64_MAX;
    for (bits = s->bits[w] & (~0ULL << (p % 64)); !bits; bits = s->bits[w])
        if (++w == s->words)
            return UINT64_MAX;
    return w * 64 + (uint64_t)__builtin_ctzll(bits);
}

#define FOR_EACH(s, p) for (p = set_next(s, 0); p != UINT64_MAX; p = set_next(s, p + 1))

/* ---------------------------------------------------------- words */

/* Copy a page word by word, so a word written meanwhile is seen whole. */
static void copy_words(void *dst, const void *src, uint64_t bytes)
{
    const volatile uint64_t *from = src;
    uint64_t *to = dst, i;
    for (i = 0; i < bytes / 8; i++)
        to[i] = from[i];
}

static int mine(const struct coh *h, uint64_t page)
{
    return page_home(h->c, page) == h->c->rank;
}

/* Protect from an application thread that holds core.mu. */
static int set_prot(struct coh *h, uint64_t page, int prot)
{
    struct core *c = h->c;
    char err[DSM_ERRLEN];
    if (!c->mem.protect(c->mem.ctx, page, 1, prot, err))
        return 0;
    core_fail(c, "%s", err);
    return -1;
}

/* ---------------------------------------------------------- diffs */

/* The words of `page` that differ from its twin, as runs of
 * (u32 first word, u32 words, the words), into out; the bytes used. */
static uint64_t make_diff(struct coh *h, uint64_t page, unsigned char *out)
{
    const uint64_t *twin = (const uint64_t *)h->rc.twin[page];
    const volatile uint64_t *now = (const uint64_t *)(h->c->rw + page * h->c->page_size);
    uint64_t n = h->c->page_size / 8, i = 0, j, used = 0;
    while (i < n) {
        uint32_t head[2];
        for (; i < n && now[i] == twin[i]; i++)
            ;
        for (j = i; j < n && now[j] != twin[j]; j++)
            ;
        if (j == i)
            break;
        head[0] = htole32((uint32_t)i);
        head[1] = htole32((uint32_t)(j - i));
        memcpy(out + used, head, 8);
        copy_words(out + used + 8, (const void *)(now + i), (j - i) * 8);
        used += 8 + (j - i) * 8;
        i = j;
    }
    return used;
}

/* Send the diff of a written page home and close it for writing (caller
 * holds core.mu, dropped while sending).  The twin goes. */
static void flush_page(struct coh *h, uint64_t page)
{
    struct core *c = h->c;
    struct msg m = { .type = DSM_DIFF, .origin = (uint16_t)c->rank, .pg = { .page = page } };
    unsigned char *buf;
    set_del(&h->rc.dirty, page);
    if (set_prot(h, page, DSM_PROT_READ) || mine(h, page))
        return;                     /* the home writes the master itself */
    /* a run header per word at most: twice the page */
    if (!(buf = malloc(2 * c->page_size))) {
        core_fail(c, "out of memory diffing page %llu", (unsigned long long)page);
        return;
    }
    m.len = (uint32_t)make_diff(h, page, buf);
    free(h->rc.twin[page]);
    h->rc.twin[page] = NULL;
    h->rc.twin_bytes -= c->page_size;
    if (m.len) {
        c->stats.diffs++;
        c->stats.diff_bytes += m.len;
        h->rc.acks_due++;
        tp_send_app(h->t, page_home(c, page), &m, buf);
    }
    free(buf);
}

/* A write to a readable copy opens here (coh_proto.open_here): the first
 * write of the interval to a page not homed here takes a twin.  Anything
 * else asks the home. */
static enum coh_step rc_open_here(struct coh *h, uint64_t page, int write)
{
    struct core *c = h->c;
    uint64_t p;
    if (!write || c->pages[page].prot != DSM_PROT_READ)
        return COH_ASK;
    if (!mine(h, page)) {
        while (h->rc.twin_bytes + c->page_size > h->rc.limit &&
               (p = set_next(&h->rc.dirty, 0)) != UINT64_MAX) {
            c->stats.early_flushes++;
            flush_page(h, p);       /* twins are bounded: one page goes home early */
            if (c->pages[page].prot != DSM_PROT_READ)
                return COH_AGAIN;   /* core.mu was dropped: look again */
        }
        if (!(h->rc.twin[page] = malloc(c->page_size))) {
            core_fail(c, "out of memory for the twin of page %llu",
                             (unsigned long long)page);
            return COH_WAIT;
        }
        copy_words(h->rc.twin[page], c->rw + page * c->page_size, c->page_size);
        h->rc.twin_bytes += c->page_size;
        c->stats.twins++;
    }
    if (set_prot(h, page, DSM_PROT_RW))
        return COH_WAIT;
    c->stats.invalidations_saved++;     /* sequential mode would have asked the home */
    set_add(&h->rc.dirty, page);
    set_add(&h->rc.written, page);
    set_add(&h->rc.known, page);
    return COH_DONE;
}

void rc_flush(struct coh *h)
{
    uint64_t p;
    while ((p = set_next(&h->rc.dirty, 0)) != UINT64_MAX && !core_failed(h->c))
        flush_page(h, p);
}

int rc_flushed(struct coh *h)
{
    return !h->rc.acks_due;
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

/* A page `rank` wrote: drop our copy, unless the writer is us or we are
 * its home. */
static void drop_others(struct coh *h, int rank, uint64_t page)
{
    struct core *c = h->c;
    if (rank != c->rank && !mine(h, page) &&
        (coh_holds(c, page) || c->pages[page].pending)) {
        set_add(&h->rc.drop, page);
        if (set_has(&h->rc.written, page))
            set_add(&h->rc.refetch, page);  /* we write it too: we will again */
    }
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
        each_page(h, -1, p, drop_others);       /* some earlier holder wrote it */
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

/* A page one rank alone wrote moves its home there. */
static void move_home(struct coh *h, int rank, uint64_t page)
{
    uint16_t *w = h->rc.writer;
    if (w[page] < SEVERAL && h->c->homes[page] != w[page]) {
        h->c->homes[page] = w[page];
        h->c->stats.homes_moved++;
        /* Every other copy goes at this barrier, and one served to a rank
         * ahead of us is marked already: unless so, we may write it unnoted. */
        if (w[page] != h->c->rank)
            set_del(&h->rc.served, page);
        else if (!set_has(&h->rc.served, page))
            set_prot(h, page, DSM_PROT_RW);
    }
    w[page] = NOBODY;
}

void rc_barrier(struct coh *h, const unsigned char *gathered, uint64_t len)
{
    each_notice(h, gathered, len, note_writer);
    each_notice(h, gathered, len, move_home);
    each_notice(h, gathered, len, drop_others);
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
    FOR_EACH(&h->rc.drop, p) {
        if (c->pages[p].pending)
            continue;
        /* False sharing: our words go home first (and the twin).  Sending
         * drops core.mu, and another thread may write the page again
         * meanwhile: then its words go too, before the copy is dropped. */
        while (set_has(&h->rc.dirty, p))
            flush_page(h, p);
        set_del(&h->rc.drop, p);
        held = coh_holds(c, p);
        coh_forget_closed(c, p);
        if (held && (c->pages[p].prot == DSM_PROT_NONE || !set_prot(h, p, DSM_PROT_NONE))) {
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
        copy_words(page + head[0] * 8, payload + at + 8, head[1] * 8ULL);
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
    unsigned char *copy = malloc((n < RUN_MAX ? n : RUN_MAX) * c->page_size);
    if (!copy) {
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
                    set_prot(h, p, DSM_PROT_READ);
            }
            copy_words(copy + (p - out.pg.page) * c->page_size, c->rw + p * c->page_size,
                       c->page_size);
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
        set_init(&rc->served, c->npages))
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
    .confirms = rc_confirms,
    .serves = rc_serves,
    .request = rc_serve,
    .flush = rc_flush_batch,
};
