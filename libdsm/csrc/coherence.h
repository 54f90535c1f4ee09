/* Layer 2: coherence, two models behind one interface (struct coh_proto),
 * chosen once in coh_init from core.release.
 *
 * Sequential consistency (coh_sc.c, the default) is write-invalidate with
 * multiple readers, after IVY's distributed manager: every page has a
 * round-robin home that keeps its directory entry (owner and copyset) and
 * serialises the faults on it.
 *
 *  read fault   R -REQ-> home -FWD-> owner -PAGE(data)-> R -UPDATE-> home
 *  write fault  home -INV-> each other copy -INV_ACK-> home, then as above;
 *               a requester that already holds a current copy gets a grant
 *               without data.
 *
 * A fault costs the same few messages however many ranks there are, plus
 * one INV/INV_ACK pair per copy that must go.  When the home itself sends
 * the page, no DSM_UPDATE is needed: anything the home sends the requester
 * later travels behind the page on the same connection.
 *
 * Release consistency (coh_rc.c) is home-based with multiple writers: a
 * fault fetches a copy (REQ, PAGE), a write opens it here with a twin, and
 * a release sends diffs home.
 *
 * coh_app.c is the faulting side (application threads); coh_serve.c the
 * receiving side both models share (installs, the request table, run by
 * the comm thread); coh.c chooses the model.
 *
 * Protocol handlers run in the comm thread, and, with DSM_WAIT=reply, also
 * in a faulting application thread inside its SIGSEGV handler (coh_fault ->
 * core_spin polls the sockets, taking loop_mu by trylock).  That is safe
 * because the fault is synchronous: the thread stopped at its own load or
 * store to the region, holding none of our locks (core.mu is never held
 * across an access to the application's view, and loop_mu is only tried);
 * and every handler reaches page data through the read/write view, never
 * the application's view, so a handler cannot fault in turn. */
#ifndef DSM_COHERENCE_H
#define DSM_COHERENCE_H
#include <stdlib.h>
#include <string.h>
#include "transport.h"

#define BATCH_MAX 512

/* The home's view of a page.  Reads of one page are served at once, each
 * by a different holder (the owner or a reader that already has it), so N
 * readers of a hot page take O(log N) rounds, not N; a write waits for
 * them and is served alone. */
struct dir {
    uint64_t copyset;       /* ranks holding read copies, the owner excluded (coh_bit:
                             * with share=host on several hosts, their hosts) */
    uint64_t lending;       /* holders serving a read now (coh_bit) */
    uint16_t owner;         /* holds the current data, READ or RW */
    uint16_t origin;        /* the write being served while busy */
    uint16_t acks;          /* INV_ACKs still to come */
    uint16_t reads;         /* reads being served */
    uint16_t queued;        /* requests waiting for this page */
    uint8_t busy;           /* a write is being served */
};

/* A fault waiting at its home for earlier ones on the same page. */
struct waiter {
    uint64_t page;
    uint16_t origin;
    uint8_t mode;
    struct waiter *next;
};

/* A protection change the comm thread batches, so that a burst of pages
 * costs one mprotect per run of consecutive pages: pages received but not
 * yet opened to the application (installs), and pages to downgrade before
 * they are sent (serves). */
struct batched {
    uint64_t page;
    uint8_t stale;              /* installs: not asked for: dropped, only confirmed */
    uint8_t prot;               /* the protection the page gets */
    uint8_t confirm;            /* installs: send DSM_UPDATE to the home */
    uint8_t mode;               /* serves: what the requester asked for */
    uint8_t data;               /* serves: send the data (else the requester has it) */
    uint8_t closed;             /* installs: kept closed (page.closed), not protected */
    uint16_t origin;            /* serves: the requester */
    uint16_t server;            /* installs: who sent it (for DSM_UPDATE) */
    uint16_t from;              /* serves: the rank that sent the DSM_FWD */
};

/* Sequential read-ahead: reads that keep running into the page just past
 * the last run fetch twice as many pages each time.  Guarded by core.mu. */
struct readahead {
    uint64_t up_next, down_next, window;
};

/* A set of pages, as a bitmap. */
struct pageset {
    uint64_t *bits, words, count;
};

static inline int set_has(const struct pageset *s, uint64_t p)
{
    return s->bits[p / 64] >> (p % 64) & 1;
}

static inline void set_add(struct pageset *s, uint64_t p)
{
    if (!set_has(s, p))
        s->bits[p / 64] |= 1ULL << (p % 64), s->count++;
}

static inline void set_del(struct pageset *s, uint64_t p)
{
    if (set_has(s, p))
        s->bits[p / 64] &= ~(1ULL << (p % 64)), s->count--;
}

/* A set for pages [0, npages), empty: 0, or -1 out of memory. */
static inline int set_init(struct pageset *s, uint64_t npages)
{
    s->count = 0;
    s->words = (npages + 63) / 64;
    s->bits = calloc(s->words ? s->words : 1, sizeof *s->bits);
    return s->bits ? 0 : -1;
}

static inline void set_clear(struct pageset *s)
{
    memset(s->bits, 0, s->words * sizeof *s->bits);
    s->count = 0;
}

/* The first page of the set at or after p, or UINT64_MAX. */
static inline uint64_t set_next(const struct pageset *s, uint64_t p)
{
    uint64_t w = p / 64, bits;
    if (w >= s->words)
        return UINT64_MAX;
    for (bits = s->bits[w] & (~0ULL << (p % 64)); !bits; bits = s->bits[w])
        if (++w == s->words)
            return UINT64_MAX;
    return w * 64 + (uint64_t)__builtin_ctzll(bits);
}

/* A placement under way (coh_place.c), guarded by core.mu but for
 * `fences`, which only the comm thread touches. */
struct place {
    uint64_t first, n;
    uint16_t *homes;                /* the new home of each page; NULL: none under way */
    unsigned fences;                /* DSM_PLACE received for the next switch, ours included */
    int done;                       /* the homes switched here */
};

/* Release mode's state (coh_rc.c), guarded by core.mu. */
struct rc {
    uint64_t limit;                 /* twin bytes before a write sends another page home early */
    unsigned char **twin;           /* per page: its words at the first write of the interval */
    uint64_t twin_bytes;
    struct pageset dirty;           /* written since the last release */
    struct pageset written;         /* written here since the last barrier: our notices */
    struct pageset known;           /* written anywhere since then, as far as we know */
    int known_all;                  /* ... or every page (too many notices) */
    struct pageset drop;            /* copies to drop once they are here */
    struct pageset refetch;         /* ... and to ask for again at once */
    struct pageset served;          /* homed here and given to another rank: writes noted */
    uint64_t acks_due;              /* DSM_DIFF_ACKs still to come */
    uint16_t *writer;               /* per page, while a barrier's notices are read */
    uint64_t epoch;                 /* barriers passed: the age of notices */
    /* With host sharing across hosts (coh_rc.c's host part): */
    uint32_t host_due;              /* our DSM_HFLUSH, DSM_HDROP still unanswered */
    int trimming;                   /* leader: a HOST_TRIM is asked or under way */
    struct pageset room;            /* leader: pages a local rank's write to waits for twin
                                     * room (the trim serves them again) */
    int host_arrived;               /* leader: the host's other ranks in this barrier */
    struct host_sync *syncs;        /* leader: the ranks' requests it works on */
    /* leader, per other rank of the host (by its place among the host's
     * ranks, 1 to nlocal - 1): the pages whose host writes went home since
     * the DSM_HDONE of that rank's last flush, which the next one names */
    struct pageset *went_home;
};

/* What a faulting thread does next (coh_fault_step). */
enum coh_step {
    COH_DONE,           /* the page allows the access */
    COH_WAIT,           /* a request is out: sleep (core_sleep) */
    COH_AGAIN,          /* core.mu was dropped: look again at once */
    COH_FULL,           /* the ring to our own comm thread is full: sleep (core_sleep) */
    COH_ASK,            /* only from coh_proto.open_here: no, ask the home */
};

struct coh;

/* What differs between the consistency models.  One instance each:
 * coh_sequential (coh_sc.c) and coh_release (coh_rc.c); coh_init picks
 * one from core.release, and the shared paths (the fault, prefetch,
 * installs, requests) call through it and test no mode. */
struct coh_proto {
    const char *name;
    /* The model's state and its own messages' handlers, after the shared
     * ones: DSM_OK, or an error with err filled. */
    int (*init)(struct coh *h, uint64_t twin_limit, char *err);
    void (*free)(struct coh *h);
    /* Faulting side, caller holding core.mu.  Does a fault for this access
     * ask its home for a writable copy (else for a readable one)? */
    int (*asks_write)(int write);
    /* Open the access here with no message if the model can (release: a
     * write to a readable copy gets a twin): COH_DONE; COH_AGAIN if core.mu
     * was dropped meanwhile; COH_WAIT once the job failed; COH_ASK if it
     * cannot: the home must be asked. */
    enum coh_step (*open_here)(struct coh *h, uint64_t page, int write);
    /* Host leader, comm thread holding core.mu: a local rank would access
     * a page its host holds with too low an access.  1 if the model opens
     * it for writing with no message (release: the leader twins a readable
     * copy), and the caller raises the page's word; 0 if the home must be
     * asked; -1 to wait (release: the host lowers the page, or holds
     * writes of it not yet sent home, which a copy would overwrite; or the
     * job failed). */
    int (*open_host)(struct coh *h, uint64_t page, int access, int write);
    /* Host leader, comm thread holding core.mu: the host holds the page now
     * (work waiting for it may go on). */
    void (*host_installed)(struct coh *h, uint64_t page);
    /* Comm thread.  Is an install of a page that `from` sent confirmed to
     * its home with DSM_UPDATE? */
    int (*confirms)(const struct core *c, uint64_t page, int from);
    /* DSM_REQ for pages [page, page + n): are they all served here?  Then
     * serve it (request). */
    int (*serves)(struct coh *h, uint64_t page, uint64_t n);
    void (*request)(struct coh *h, const struct msg *req);
    /* The model's batched work takes effect, except on messages of `type`
     * (which may keep batching): the transport's flush hook. */
    void (*flush)(struct coh *h, int type);
};
extern const struct coh_proto coh_sequential, coh_release;

struct coh {
    struct core *c;
    struct transport *t;
    const struct coh_proto *proto;      /* set once, in coh_init */
    struct rc rc;
    struct dir *dirs;                   /* per page, used where homed here (comm thread);
                                         * NULL in release mode */
    struct waiter *wait_head, **wait_tail;
    struct batched installs[BATCH_MAX], serves[BATCH_MAX];
    unsigned n_installs, n_serves;
    struct readahead ra;
    struct parked *parked;              /* DSM_FWD, DSM_INV held for pinned pages (core.mu) */
    unsigned claim_waits;               /* fetches waiting for a page served away (core.mu) */
    struct place place;
    uint64_t stale;                     /* pages that came unasked, dropped (on_page) */
    struct host_wait *host_waits;       /* leader: local ranks' DSM_HREQs waiting (core.mu) */
    struct host_lowering *lowerings;    /* leader: messages waiting for local acks (core.mu) */
};

/* coh.c: the model of core.release (set once, before), its state and the
 * handlers; the page table (core.pages) must exist.  In release mode at
 * most twin_limit bytes of twins. */
int coh_init(struct coh *h, struct core *c, struct transport *t, uint64_t twin_limit,
             char *err);
void coh_free(struct coh *h);

/* coh_serve.c, for coh_init: the handlers both models share (DSM_REQ,
 * DSM_PAGE, the batches' flush). */
void coh_serve_init(struct coh *h);
/* ... and, for the sequential model's serving side, the batches' helpers:
 * apply a batch's protections, one protect() per run of consecutive pages
 * with the same protection, leaving pages kept closed or stale alone
 * (nonzero, the failure recorded, if one could not be applied); how many
 * entries from b[0] on are one run of consecutive pages alike in `same`,
 * at most RUN_MAX of them. */
int coh_protect_runs(struct coh *h, const struct batched *b, unsigned n);
unsigned coh_run_of(const struct core *c, const struct batched *b, unsigned n,
                    int (*same)(const struct core *, const struct batched *,
                                const struct batched *));

/* A coherence message comes (comm thread): traced; 1 if it names a page
 * of the region, else 0 with the failure recorded. */
static inline int coh_arrived(struct coh *h, const struct msg *m)
{
    TRACE(h->c, "%s page %llu mode %d origin %d from %d", msg_name(m->type),
          (unsigned long long)m->pg.page, m->pg.mode, m->origin, m->from);
    if (m->pg.page < h->c->npages)
        return 1;
    core_fail(h->c, "protocol error: %s from rank %d names page %llu of %llu",
              msg_name(m->type), m->from, (unsigned long long)m->pg.page,
              (unsigned long long)h->c->npages);
    return 0;
}

/* coh_sc.c: the directory entry of a page homed here (the simulator checks
 * them): one per page of the region, so that any page can be homed
 * anywhere.  Sequential model only. */
static inline struct dir *coh_dir(struct coh *h, uint64_t page)
{
    return &h->dirs[page];
}

/* One step of a fault, caller holding core.mu; never blocks. */
enum coh_step coh_fault_step(struct coh *h, uint64_t page, int write);
/* Is there something for a faulting thread to do (caller holds core.mu)? */
int coh_fault_ready(struct coh *h, uint64_t page, int write);
/* Ask for up to n pages from `page` on (a run that stops at the first page
 * needing no request), caller holding core.mu: the TP_DROPPED and TP_FULL
 * bits of the sends (ops.c's prefetch). */
int coh_request(struct coh *h, uint64_t page, uint64_t n, int write);
/* Release mode: ask again, at once, for a copy an acquire dropped. */
void coh_refetch(struct coh *h, uint64_t page);

/* coh_host.c: share=host on several hosts (core.host_state set).  The
 * protocol above runs between host leaders; a host's other ranks map what
 * their leader holds for the host, as the page's word in the host's shared
 * memory says (hostmem.h):
 *
 *   local hit   a rank faults on a page its host holds in the mode it needs:
 *               it sets its bit in the word and maps the page, no message
 *   local miss  rank -DSM_HREQ-> leader, which fetches the page for the host
 *               as for a fault of its own, raises the word's access when
 *               the page is installed, and answers -DSM_HGRANT-> rank
 *   lowering    before a leader serves a page away (DSM_FWD) or drops it
 *               (DSM_INV), it lowers the word's access, sends DSM_HINV to
 *               each rank whose bit is set (with HOST_OVERFLOW, to every
 *               rank beyond the bits), and parks the message until
 *               every DSM_HINV_ACK is in: only then does the page or the
 *               DSM_INV_ACK leave the host.
 *
 * coh_host_init registers the four handlers (nothing without host_state). */
struct host_wait;
struct host_lowering;
void coh_host_init(struct coh *h);
void coh_host_free(struct coh *h);
/* Is this a rank whose faults go through its host's leader? */
static inline int coh_host_local(const struct core *c)
{
    return c->host_state && c->leader != c->rank;
}
/* Faulting side of such a rank, caller holding core.mu: coh_fault_step's
 * answer, and coh_request's bits (the page asked for, one at a time). */
enum coh_step coh_host_fault(struct coh *h, uint64_t page, int write);
int coh_host_request(struct coh *h, uint64_t page, int write);
/* Leader, comm thread: about to serve m (DSM_FWD) or drop the page (DSM_INV),
 * leaving the host `prot`: lower the host's copy; 1 if m is parked until
 * the local ranks have lowered their mappings (it then runs again), 0 to
 * go on now. */
int coh_host_lower(struct coh *h, const struct msg *m, int prot);
/* The same for `page`, any message m (release mode: a home's DSM_REQ), and
 * m queued behind a lowering of the page already under way. */
int coh_host_lower_page(struct coh *h, const struct msg *m, uint64_t page, int prot);
/* Leader holding core.mu, release mode: the host writes the page, twinned
 * (or homed here): its word gives read/write. */
void coh_host_raise(struct coh *h, uint64_t page);
/* Leader, comm thread holding core.mu: answer the local ranks' requests
 * for the page that its word allows now. */
void coh_host_serve(struct coh *h, uint64_t page);
/* Leader, comm thread holding core.mu: pages were installed here with
 * these protections (stale ones skipped): the host holds them so. */
void coh_host_installed(struct coh *h, const struct batched *b, unsigned n);
/* Leader: is the page being lowered, its local ranks' acks still to come?
 * (The simulator checks the host's copy against its ranks' mappings.) */
int coh_host_lowering(const struct coh *h, uint64_t page);
/* The access a page's word gives, and its ranks' bits (hostmem.h). */
int coh_host_access(const struct core *c, uint64_t page, uint64_t *mapped);

/* coh_pin.c: pinned pages stay here.  A DSM_FWD or DSM_INV for a pinned
 * page is parked (coh_park, from the serving side) and runs again once the
 * page is unpinned: coh_unpin asks for that with a DSM_UNPIN to ourselves.
 * Pins are taken in ascending page order, each once its page is here
 * (ops.c's OP_FETCH with pin): a rank waiting for a page pinned elsewhere holds
 * pins only below it, so no two pinning ranks wait for each other.  Nested
 * pins break the order; a deadline turns that deadlock into an error. */
struct parked {
    struct msg m;
    struct parked *next;
};
void coh_pin_init(struct coh *h);
void coh_pin_free(struct coh *h);
/* Comm thread, about to give a page away: claim it (0), so that no thread
 * pins it meanwhile, or park m if it is pinned already (1).  coh_unclaim
 * ends the claim once the page is gone, and wakes the threads that wait
 * for it: a claimed page is waited for (ops.c's fetch, counted in claim_waits,
 * or a fault, counted in pages[].waiters), never
 * asked for while it is still here. */
int coh_claim(struct coh *h, const struct msg *m);
void coh_unclaim(struct coh *h, uint64_t page);
/* Comm thread: park m if its page is pinned; 1 if it was (or was dropped
 * because the job failed). */
int coh_park(struct coh *h, const struct msg *m);
/* Caller holds core.mu: pin the page if it allows the access; 1 if it did. */
int coh_pin_page(struct coh *h, uint64_t page, int write);
/* Caller holds core.mu: drop one pin of each page; 1 if parked messages may
 * now run, and a DSM_UNPIN must go to our comm thread (coh_unpin_poke). */
int coh_unpin(struct coh *h, uint64_t first, uint64_t n);
/* Caller holds core.mu: post DSM_UNPIN to ourselves; 0, or TP_FULL. */
int coh_unpin_poke(struct coh *h);

/* coh_place.c: moving the homes of pages [first, first + n), sequential
 * mode, at a collective point where no thread of any rank touches those
 * pages (dsm_place: every rank, the same homes, between two barriers).
 *   1. coh_place_settled: no request of ours for the range is under way
 *      (read-ahead may have left some); then the first barrier.
 *   2. coh_place_begin; each new home takes its pages for writing
 *      (coh_place_next gives them): the data and the exclusive copy move
 *      through the old home's directory, with the usual protocol.
 *   3. coh_place_post: DSM_PLACE to our comm thread, which sends it to
 *      every peer behind all it sent before (the last DSM_UPDATE to an old
 *      home included: each channel is FIFO).
 *   4. Once a comm thread has every rank's DSM_PLACE, nothing for those
 *      pages is in flight towards it: it switches the homes, and a new
 *      home's directory entry starts afresh (owner itself, no copies);
 *      coh_place_done.  Then coh_place_end, and the second barrier, after
 *      which every rank asks the new homes.
 * With share=host on several hosts the homes are leaders, the only ranks
 * that take pages; the others only exchange DSM_PLACE and switch (see
 * coh_place.c). */
void coh_place_init(struct coh *h);
/* Caller holds core.mu: no page of the range is pending here. */
int coh_place_settled(struct coh *h, uint64_t first, uint64_t n);
/* Caller holds core.mu: a placement begins (the homes are copied); 0, or
 * -1 out of memory. */
int coh_place_begin(struct coh *h, uint64_t first, uint64_t n, const uint16_t *homes);
/* Caller holds core.mu: the first page from `page` on that this rank is to
 * home but does not hold writable, or first + n if none. */
uint64_t coh_place_next(struct coh *h, uint64_t page);
/* Caller holds core.mu: post DSM_PLACE to ourselves; 0, or TP_FULL. */
int coh_place_post(struct coh *h);
int coh_place_done(struct coh *h);      /* caller holds core.mu */
void coh_place_end(struct coh *h);      /* caller holds core.mu (or the rank is ending) */

/* coh_rc.c: release mode (coh_release), what the API's synchronisation
 * calls.  These run in application threads holding core.mu (which sending
 * drops for a while). */
/* Release: every written page's diff goes home (with host sharing, the
 * host's, asked of its leader), for a barrier or not: 0, or TP_FULL
 * (nothing asked: retry). */
int rc_flush(struct coh *h, int barrier);
int rc_flushed(struct coh *h);      /* ... and every home applied it */
/* Before a barrier's notices: 1 once the host's other ranks all flushed
 * for it, the host's notices then complete (a leader), else 0; 1 where no
 * host is shared. */
int rc_host_arrived(struct coh *h);
/* This rank's write notices: for a barrier, or for a lock's next holder.
 * 0, or -1 (out of memory); *out is malloc'd. */
int rc_notices(struct coh *h, int for_lock, unsigned char **out, uint64_t *len);
void rc_acquire(struct coh *h, const unsigned char *notices, uint64_t len);
/* After a barrier: the notices of every rank, as a gather delivers them. */
void rc_barrier(struct coh *h, const unsigned char *gathered, uint64_t len);
/* With host sharing, ask the leader to drop the host's copies noticed, once
 * it passed our barriers: 0, or TP_FULL (nothing asked: retry); nothing to
 * do per rank. */
int rc_drop_begin(struct coh *h);
int rc_drop_step(struct coh *h);    /* drop the copies noticed; 1 when done */

/* coh_twin.c, for coh_rc.c and coh_rchost.c, each caller holding core.mu:
 * a page copied word by word (a word written meanwhile seen whole); a
 * protection from whichever thread (0, or -1 with the job failed); the
 * first write of an interval to a page (a twin unless homed here; 0, or -1
 * once the job failed); a written page's diff home, from an application
 * thread (`app`, core.mu dropped while sending) or the comm thread; a page
 * `rank` wrote, whose copy here goes at the next drop (rank -1: a lock's
 * notice). */
void rc_copy_words(void *dst, const void *src, uint64_t bytes);
int rc_set_prot(struct coh *h, uint64_t page, int prot);
int rc_open_write(struct coh *h, uint64_t page);
void rc_send_diff(struct coh *h, uint64_t page, int app);
void rc_drop_others(struct coh *h, int rank, uint64_t page);
/* coh_rchost.c, for coh_rc.c: its handlers (rc_init), and the requests freed (rc_free);
 * rc_flush's DSM_HFLUSH; before the home serves req (n pages), the host's
 * copies lowered to read-only where first served (1: req is parked until
 * then); a leader's requests answered once done (comm thread); the hooks
 * coh_proto.open_host and .host_installed; the twins' bound. */
int rc_host_init(struct coh *h);     /* 0, or -1 out of memory */
void rc_host_free(struct coh *h);
int rc_host_flush(struct coh *h, int barrier);
int rc_host_closes(struct coh *h, const struct msg *req, uint64_t n);
void rc_host_answer(struct coh *h);
int rc_open_host(struct coh *h, uint64_t page, int access, int write);
/* Leader holding core.mu: would a twin of `page` go over DSM_TWIN_LIMIT?
 * Then ask its comm thread (from an application thread: `app`) to send
 * dirty pages home early until there is room: 0, or TP_FULL (nothing
 * asked: retry); a write waits for the core_wake after. */
int rc_host_full(struct coh *h, uint64_t page);
int rc_host_trim(struct coh *h, int app);
void rc_host_installed(struct coh *h, uint64_t page);

/* Pages that came but are kept closed (page.closed): a read-ahead trigger,
 * whose first access asks for the next run, and a page a faulting thread
 * waits for and had mapped before, which that thread opens itself.  The
 * mprotect that opens such a page (an upgrade, a copy fetched again)
 * flushes it from the TLB of every CPU running the process: done by the
 * comm thread while the waiter spins on another CPU, that costs an
 * interrupt there (a VM exit on a VM).
 *
 * Is a current copy of the page here, open or closed (caller holds
 * core.mu, or is the comm thread)? */
static inline int coh_holds(const struct core *c, uint64_t page)
{
    /* closed first: coh_open_closed opens the page, then clears it */
    return (__atomic_load_n(&c->pages[page].closed, __ATOMIC_ACQUIRE) &&
            !c->pages[page].pending) ||
           __atomic_load_n(&c->pages[page].prot, __ATOMIC_ACQUIRE) != DSM_PROT_NONE;
}

/* coh_app.c: open a closed page (caller holds core.mu): 0 if it was not
 * one, 1 if it was, 2 if it was a read-ahead trigger. */
int coh_open_closed(struct coh *h, uint64_t page);
/* Forget that a page is closed (it is being given away or dropped). */
static inline void coh_forget_closed(struct core *c, uint64_t page)
{
    __atomic_store_n(&c->pages[page].closed, 0, __ATOMIC_RELEASE);
    c->pages[page].trigger = 0;
}

/* coh_serve.c, for coh_app.c: whether a page allows an access. */
static inline int coh_satisfied(const struct core *c, uint64_t page, int write)
{
    int prot = c->pages[page].prot;
    return prot == DSM_PROT_RW || (!write && prot == DSM_PROT_READ);
}
#endif
