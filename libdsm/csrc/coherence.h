/* Layer 2: sequential consistency by write-invalidate with multiple
 * readers, after IVY's distributed manager: every page has a round-robin
 * home that keeps its directory entry (owner and copyset) and serialises
 * the faults on it.
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
 * coh_app.c is the faulting side (application threads); coh_serve.c the
 * serving side (handlers, run by the comm thread). */
#ifndef DSM_COHERENCE_H
#define DSM_COHERENCE_H
#include "transport.h"

#define BATCH_MAX 512

/* The home's view of a page. */
struct dir {
    uint64_t copyset;       /* ranks holding read copies, the owner excluded */
    uint16_t owner;         /* holds the current data, READ or RW */
    uint16_t origin;        /* the fault being served while busy */
    uint16_t acks;          /* INV_ACKs still to come */
    uint8_t busy;
    uint8_t mode;
};

/* A fault waiting at its home for an earlier one on the same page. */
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
    uint8_t prot;               /* the protection the page gets */
    uint8_t confirm;            /* installs: send DSM_UPDATE to the home */
    uint8_t mode;               /* serves: what the requester asked for */
    uint8_t data;               /* serves: send the data (else the requester has it) */
    uint16_t origin;            /* serves: the requester */
};

/* Sequential read-ahead: reads that keep running into the page just past
 * the last run fetch twice as many pages each time.  Guarded by core.mu. */
struct readahead {
    uint64_t up_next, down_next, window;
};

struct coh {
    struct core *c;
    struct transport *t;
    struct dir *dirs;                   /* the pages homed here (comm thread) */
    struct waiter *wait_head, **wait_tail;
    struct batched installs[BATCH_MAX], serves[BATCH_MAX];
    unsigned n_installs, n_serves;
    struct readahead ra;
    struct parked *parked;              /* DSM_FWD, DSM_INV held for pinned pages (core.mu) */
};

/* Directory and handlers; the page table (core.pages) must exist. */
int coh_init(struct coh *h, struct core *c, struct transport *t, char *err);
void coh_free(struct coh *h);

/* The directory entry of a page homed here (the simulator checks them). */
struct dir *coh_dir(struct coh *h, uint64_t page);

/* What a faulting thread does next (coh_fault_step). */
enum coh_step {
    COH_DONE,           /* the page allows the access */
    COH_WAIT,           /* a request is out: wait for core.cv */
    COH_AGAIN,          /* core.mu was dropped: look again at once */
    COH_FULL,           /* the ring to our own comm thread is full: wait for core.cv */
};
/* One step of a fault, caller holding core.mu; never blocks. */
enum coh_step coh_fault_step(struct coh *h, uint64_t page, int write);
/* Is there something for a faulting thread to do (caller holds core.mu)? */
int coh_fault_ready(struct coh *h, uint64_t page, int write);
/* Block the faulting thread until the page allows the access (in the
 * SIGSEGV handler).  write < 0: the CPU did not say; a fault on a page
 * readable already must be a write. */
void coh_fault(struct coh *h, uint64_t page, int write);
/* Fetch pages [first, first + n) and wait for them: a bulk fault.  With
 * `pin`, each page is pinned as soon as it is here, in ascending order
 * (coh_pin.c); on an error none stays pinned.  deadline (now_ns) 0: none;
 * past it, DSM_ETIMEDOUT. */
int coh_prefetch(struct coh *h, uint64_t first, uint64_t n, int write, int pin,
                 uint64_t deadline, char *err);

/* coh_pin.c: pinned pages stay here.  A DSM_FWD or DSM_INV for a pinned
 * page is parked (coh_park, from the serving side) and runs again once the
 * page is unpinned: coh_unpin asks for that with a DSM_UNPIN to ourselves.
 * Pins are taken in ascending page order, each once its page is here
 * (coh_prefetch with pin): a rank waiting for a page pinned elsewhere holds
 * pins only below it, so no two pinning ranks wait for each other.  Nested
 * pins break the order; a deadline turns that deadlock into an error. */
struct parked {
    struct msg m;
    struct parked *next;
};
void coh_pin_init(struct coh *h);
void coh_pin_free(struct coh *h);
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
/* coh_unpin and its DSM_UNPIN, waiting for room in the ring (takes
 * core.mu): DSM_OK, or DSM_EPEER with err filled once the job failed. */
int coh_unpin_wait(struct coh *h, uint64_t first, uint64_t n, char *err);

/* coh_serve.c, for coh_app.c: whether a page allows an access. */
static inline int coh_satisfied(const struct core *c, uint64_t page, int write)
{
    int prot = c->pages[page].prot;
    return prot == DSM_PROT_RW || (!write && prot == DSM_PROT_READ);
}
#endif
