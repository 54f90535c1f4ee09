/* Layer 2: release mode's twins and diffs (coh_rc.c's model): a page's
 * first write of an interval, its diff home, and the copies a write notice
 * drops.  Both the per-rank protocol (coh_rc.c) and a host leader's work
 * (coh_rchost.c) call these, holding core.mu. */
#define _GNU_SOURCE
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include "coherence.h"

/* Copy a page word by word, so a word written meanwhile is seen whole. */
void rc_copy_words(void *dst, const void *src, uint64_t bytes)
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
int rc_set_prot(struct coh *h, uint64_t page, int prot)
{
    struct core *c = h->c;
    char err[DSM_ERRLEN];
    if (!c->mem.protect(c->mem.ctx, page, 1, prot, err))
        return 0;
    core_fail(c, "%s", err);
    return -1;
}

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
        rc_copy_words(out + used + 8, (const void *)(now + i), (j - i) * 8);
        used += 8 + (j - i) * 8;
        i = j;
    }
    return used;
}

/* Close a written page for writing here and take its diff, the twin
 * going (caller holds core.mu): into m (DSM_DIFF) and *buf (malloc'd), or
 * *buf NULL when nothing goes home (homed here, no word changed, the job
 * failed). */
static void take_diff(struct coh *h, uint64_t page, struct msg *m, unsigned char **buf)
{
    struct core *c = h->c;
    *buf = NULL;
    *m = (struct msg){ .type = DSM_DIFF, .origin = (uint16_t)c->rank, .pg = { .page = page } };
    set_del(&h->rc.dirty, page);
    if ((c->pages[page].prot == DSM_PROT_RW && rc_set_prot(h, page, DSM_PROT_READ)) ||
        mine(h, page))
        return;                     /* the home writes the master itself */
    /* a run header per word at most: twice the page */
    if (!(*buf = malloc(2 * c->page_size))) {
        core_fail(c, "out of memory diffing page %llu", (unsigned long long)page);
        return;
    }
    m->len = (uint32_t)make_diff(h, page, *buf);
    free(h->rc.twin[page]);
    h->rc.twin[page] = NULL;
    h->rc.twin_bytes -= c->page_size;
    if (!m->len) {
        free(*buf);
        *buf = NULL;
        return;
    }
    c->stats.diffs++;
    c->stats.diff_bytes += m->len;
    h->rc.acks_due++;
}

/* Send the diff of a written page home and close it for writing (caller
 * holds core.mu): from an application thread (`app`, core.mu dropped while
 * sending), or from the comm thread (a host's leader, its copy read-only on
 * the host already, so that no rank writes it while it is taken). */
void rc_send_diff(struct coh *h, uint64_t page, int app)
{
    struct msg m;
    unsigned char *buf;
    take_diff(h, page, &m, &buf);
    if (buf && app)
        tp_send_app(h->t, page_home(h->c, page), &m, buf);
    else if (buf)
        tp_send(h->t, page_home(h->c, page), &m, buf);
    free(buf);
}

/* The first write of the interval to a page (caller holds core.mu): a
 * twin unless homed here, and the notes.  A page dirty already (with host
 * sharing: another rank of the host opened it) has its twin.  0, or -1
 * once the job failed. */
int rc_open_write(struct coh *h, uint64_t page)
{
    struct core *c = h->c;
    if (set_has(&h->rc.dirty, page))
        return 0;
    if (!mine(h, page)) {
        if (!(h->rc.twin[page] = malloc(c->page_size))) {
            core_fail(c, "out of memory for the twin of page %llu", (unsigned long long)page);
            return -1;
        }
        rc_copy_words(h->rc.twin[page], c->rw + page * c->page_size, c->page_size);
        h->rc.twin_bytes += c->page_size;
        if (h->rc.twin_bytes > c->stats.twin_peak)
            c->stats.twin_peak = h->rc.twin_bytes;
        c->stats.twins++;
    }
    set_add(&h->rc.dirty, page);
    set_add(&h->rc.written, page);
    set_add(&h->rc.known, page);
    return 0;
}

/* A page `rank` wrote: drop our copy, unless the writer is us or we are
 * its home.  A host's other ranks note every page for their leader, who
 * holds the host's copies (and is the home of some). */
void rc_drop_others(struct coh *h, int rank, uint64_t page)
{
    struct core *c = h->c;
    if (rank != c->rank && page_home(c, page) != (c->host_state ? c->leader : c->rank) &&
        (coh_host_local(c) || coh_holds(c, page) || c->pages[page].pending)) {
        set_add(&h->rc.drop, page);
        if (set_has(&h->rc.written, page))
            set_add(&h->rc.refetch, page);  /* we write it too: we will again */
    }
}
