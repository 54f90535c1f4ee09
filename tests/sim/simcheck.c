/* The rules the simulation checks after every step and at the end. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"
#include "hostmem.h"

/* ---------------------------------------------------------- the checker */

static int page_home_lock(uint32_t lock)
{
    return (int)(lock % (uint32_t)W.s.n);
}

void observe(struct sim *s, int dst, const struct msg *m)
{
    struct lock_fifo *f;
    W.cover.handoffs += m->type == DSM_LOCK_GRANT && m->from != page_home_lock(m->lk.lock);
    W.cover.collectives += m->type == DSM_COLL;
    W.cover.runs += m->type == DSM_PAGE && m->pg.count > 1;
    W.cover.host_invs += m->type == DSM_HINV;
    W.cover.overflow_invs += m->type == DSM_HINV &&     /* a host's ranks are consecutive */
                             dst - s->leaders[s->host[dst]] > HOST_RANK_BITS;
    if (m->type != DSM_LOCK_ACQ || m->lk.lock >= MAX_LOCKS)
        return;
    f = &W.fifo[m->lk.lock];
    f->q[(f->head + f->len++) % 64] = m->origin;
}

/* The home of page p that every rank agrees on, or -1 while a placement
 * switches the ranks' tables one by one. */
static int agreed_home(uint32_t p)
{
    int r, home = page_home(&W.s.r[0].core, p);
    for (r = 1; r < W.s.n; r++)
        if (page_home(&W.s.r[r].core, p) != home)
            return -1;
    return home;
}

/* The copies and the data; and, unless a placement is switching its home,
 * the home's directory. */
static void check_page(uint32_t p)
{
    int r, writer = -1, readers = 0, home = agreed_home(p);
    struct dir *d = home >= 0 ? coh_dir(&W.s.r[home].coh, p) : NULL;
    int quiet = d && !d->busy && !d->reads;
    W.cover.fanout += d && d->reads > 1;
    for (r = 0; r < W.s.n; r++) {
        const struct core *c = &W.s.r[r].core;
        int prot = c->pages[p].prot;
        if (c->pages[p].closed > prot && !c->pages[p].pending)
            prot = c->pages[p].closed;  /* here, kept closed for its waiter or as a trigger */
        if (prot == DSM_PROT_NONE)
            continue;
        if (memcmp(c->rw + (uint64_t)p * SIM_PAGE, W.shadow + (uint64_t)p * SIM_PAGE, SIM_PAGE))
            sim_violation(&W.s, "rank %d may read page %u, but its copy is not the last write",
                          r, p);
        if (prot == DSM_PROT_RW) {
            if (writer >= 0)
                sim_violation(&W.s, "page %u is writable at ranks %d and %d", p, writer, r);
            writer = r;
        } else {
            readers++;
        }
        if (quiet && r != d->owner && !(d->copyset >> r & 1))
            sim_violation(&W.s, "rank %d holds page %u, but the home's directory (owner %d, "
                          "copyset %#llx) does not say so", r, p, d->owner,
                          (unsigned long long)d->copyset);
    }
    if (writer >= 0 && readers)
        sim_violation(&W.s, "page %u is writable at rank %d while %d ranks read it", p, writer,
                      readers);
    if (writer >= 0 && quiet && (writer != d->owner || d->copyset))
        sim_violation(&W.s, "page %u is writable at rank %d, but the home says owner %d, "
                      "copyset %#llx", p, writer, d->owner, (unsigned long long)d->copyset);
}

/* --hosts: what any rank of host h can do with page p (its leader's view,
 * open or kept closed, and the others' mappings), checking that within the
 * host a rank maps the page no higher than the host's word says, but while
 * its leader is lowering it (the rank's DSM_HINV still to come or
 * answered), and with its bit set, or for a rank beyond the bits
 * HOST_OVERFLOW, but while a lowering to no access (which cleared it) asks
 * it: so no rank of a host that lost a page can still access it. */
static int host_view(int h, uint32_t p)
{
    struct sim *s = &W.s;
    struct srank *leader = &s->r[s->leaders[h]];
    const struct core *c = &leader->core;
    uint64_t mapped;
    int i, word = coh_host_access(c, p, &mapped), prot = c->pages[p].prot;
    int lowering = coh_host_lowering(&leader->coh, p);
    if (c->pages[p].closed > prot && !c->pages[p].pending)
        prot = c->pages[p].closed;
    for (i = 1; i < s->nlocal[h]; i++) {
        int r = s->locals[h][i], mine = s->r[r].core.pages[p].prot;
        uint64_t bit = host_bit(i);
        if (mine > word && !lowering)
            sim_violation(s, "rank %d maps page %u (%d) above its host's copy (%d)", r, p,
                          mine, word);
        if (mine != DSM_PROT_NONE && !(mapped & bit) && !(bit == HOST_OVERFLOW && lowering))
            sim_violation(s, "rank %d maps page %u, but its %s in its host's word is clear",
                          r, p, bit == HOST_OVERFLOW ? "HOST_OVERFLOW" : "bit");
        prot = mine > prot ? mine : prot;
    }
    return prot;
}

/* --hosts: the same rules for the hosts' copies, a host's copy being what
 * any of its ranks can access (host_view); the directory names hosts. */
static void check_host_page(uint32_t p)
{
    struct sim *s = &W.s;
    int h, writer = -1, readers = 0, home = agreed_home(p);
    struct dir *d = home >= 0 ? coh_dir(&s->r[home].coh, p) : NULL;
    int quiet = d && !d->busy && !d->reads;
    W.cover.fanout += d && d->reads > 1;
    for (h = 0; h < s->nhosts; h++) {
        const struct core *c = &s->r[s->leaders[h]].core;
        int prot = host_view(h, p);
        if (prot == DSM_PROT_NONE)
            continue;
        W.cover.host_copies += s->nlocal[h] > 1;
        if (memcmp(s->host_rw[h] + (uint64_t)p * SIM_PAGE, W.shadow + (uint64_t)p * SIM_PAGE,
                   SIM_PAGE))
            sim_violation(s, "host %d may read page %u, but its copy is not the last write", h,
                          p);
        if (prot == DSM_PROT_RW) {
            if (writer >= 0)
                sim_violation(s, "page %u is writable on hosts %d and %d", p, writer, h);
            writer = h;
        } else {
            readers++;
        }
        if (quiet && s->leaders[h] != d->owner && !(d->copyset & coh_bit(c, s->leaders[h])))
            sim_violation(s, "host %d holds page %u, but the home's directory (owner %d, "
                          "copyset %#llx) does not say so", h, p, d->owner,
                          (unsigned long long)d->copyset);
    }
    if (writer >= 0 && readers)
        sim_violation(s, "page %u is writable on host %d while %d hosts read it", p, writer,
                      readers);
    if (writer >= 0 && quiet && (s->leaders[writer] != d->owner || d->copyset))
        sim_violation(s, "page %u is writable on host %d, but the home says owner %d, "
                      "copyset %#llx", p, writer, d->owner, (unsigned long long)d->copyset);
}

static void check_locks(void)
{
    uint32_t k;
    int r, holders;
    for (k = 0; k < W.nlocks; k++) {
        for (holders = 0, r = 0; r < W.s.n; r++) {
            int held = W.s.r[r].locks.mine[k].state == LOCK_HELD;
            struct lock_fifo *f = &W.fifo[k];
            holders += held;
            if (held && !W.was_held[r][k]) {
                if (!f->len || f->q[f->head] != r)
                    sim_violation(&W.s, "lock %u granted to rank %d, but rank %d asked first",
                                  k, r, f->len ? f->q[f->head] : -1);
                else
                    f->head = (f->head + 1) % 64, f->len--;
            }
            W.was_held[r][k] = (uint8_t)held;
        }
        if (holders > 1)
            sim_violation(&W.s, "lock %u has %d holders", k, holders);
    }
}

/* A thread holding pins (T_PIN phase 1) still has every page pinned, with
 * the access it pinned it for. */
static void check_pins(void)
{
    int r, t;
    uint32_t p;
    for (r = 0; r < W.s.n; r++)
        for (t = 0; t < W.nthreads; t++) {
            const struct thread *th = &W.th[r][t];
            const struct task *o = &th->tasks[th->pc];
            if (thread_done(th) || o->kind != T_PIN || th->phase > 1)
                continue;
            for (p = o->page; p < o->page + (th->phase ? o->count : th->upto); p++)
                if (!W.s.r[r].core.pages[p].pinned ||
                    !coh_satisfied(&W.s.r[r].core, p, (int)o->write))
                    sim_violation(&W.s, "rank %d pinned page %u for %s, but it went", r, p,
                                  o->write ? "writing" : "reading");
        }
}

/* Release mode with --hosts: the host's twins and sets are its leader's.
 * A host's copy (host_view) is writable only while the leader has it
 * dirty with a twin, or for its home while dirty or never served; a twin
 * is only of a dirty page; the leader's twins stay within the limit; the
 * other ranks of a host keep no twins and nothing dirty.  A dirty copy may
 * be read-only while a release lowers it before its diff leaves. */
static void check_host_release(uint32_t p)
{
    struct sim *s = &W.s;
    int h, i;
    for (h = 0; h < s->nhosts; h++) {
        int l = s->leaders[h];
        const struct coh *lc = &s->r[l].coh;
        int rw, dirty = lc->rc.dirty.bits[p / 64] >> (p % 64) & 1, twin = lc->rc.twin[p] != NULL;
        int home = page_home(&s->r[l].core, p) == l;
        int served = lc->rc.served.bits[p / 64] >> (p % 64) & 1;
        if (s->r[l].dead)
            continue;
        if (lc->rc.twin_bytes > lc->rc.limit)
            sim_violation(s, "host %d keeps %llu bytes of twins, over its limit of %llu", h,
                          (unsigned long long)lc->rc.twin_bytes,
                          (unsigned long long)lc->rc.limit);
        i = host_view(h, p);
        rw = i == DSM_PROT_RW;
        W.cover.host_copies += i != DSM_PROT_NONE && s->nlocal[h] > 1;
        if ((rw && !(home ? dirty || !served : dirty && twin)) || (twin && (home || !dirty)) ||
            (dirty && !home && !twin))
            sim_violation(s, "host %d page %u: writable %d, dirty %d, twin %d, home %d, "
                          "served %d", h, p, rw, dirty, twin, home, served);
        for (i = 1; i < s->nlocal[h]; i++) {
            const struct coh *o = &s->r[s->locals[h][i]].coh;
            if (o->rc.twin[p] || o->rc.dirty.bits[p / 64] >> (p % 64) & 1)
                sim_violation(s, "rank %d page %u: a twin or dirty, but only its host's leader "
                              "keeps them", s->locals[h][i], p);
        }
    }
}

/* Release mode: a copy is writable exactly while it is dirty (written
 * since the last release), with a twin; the home's page may be writable
 * unnoted only while it never served it. */
static void check_release(uint32_t p)
{
    int r;
    for (r = 0; r < W.s.n; r++) {
        struct srank *sr = &W.s.r[r];
        int rw = sr->core.pages[p].prot == DSM_PROT_RW;
        int dirty = sr->coh.rc.dirty.bits[p / 64] >> (p % 64) & 1;
        int home = page_home(&sr->core, p) == r;
        if (sr->dead)
            continue;
        int served = sr->coh.rc.served.bits[p / 64] >> (p % 64) & 1;
        if (home ? (dirty && !rw) || (rw && !dirty && served)
                 : rw != dirty || (rw && !sr->coh.rc.twin[p]))
            sim_violation(&W.s, "rank %d page %u: writable %d, dirty %d, twin %d, home %d, "
                          "served %d", r, p, rw, dirty, sr->coh.rc.twin[p] != NULL, home, served);
    }
}

static void check_no_stale_pages(void);

void check_step(void)
{
    uint32_t p;
    if (W.dropped >= 0)
        return;                 /* after a death only liveness is checked */
    for (p = 0; p < W.npages; p++)
        W.release ? (W.hosts ? check_host_release(p) : check_release(p))
                  : W.hosts ? check_host_page(p) : check_page(p);
    check_pins();
    check_locks();
    check_no_stale_pages();
}

/* After a step run while another thread of its rank had core.mu dropped:
 * that one is half way, so only what cannot be half way is checked (a
 * lock may come and go within the outer step). */
void check_nested_step(void)
{
    if (W.dropped < 0)
        check_locks();
}

/* At the end: the ranks agree on every page's home, and in release mode
 * (after a last barrier) every home holds the last write of every word. */
static void check_homes(void)
{
    uint32_t p;
    int r;
    for (r = 1; r < W.s.n; r++)
        if (memcmp(W.s.r[r].core.homes, W.s.r[0].core.homes, W.npages * sizeof(uint16_t)))
            sim_violation(&W.s, "ranks 0 and %d disagree on where pages live", r);
    for (p = 0; W.release && p < W.npages; p++) {
        const struct core *home = &W.s.r[page_home(&W.s.r[0].core, p)].core;
        if (memcmp(home->rw + (uint64_t)p * SIM_PAGE, W.shadow + (uint64_t)p * SIM_PAGE,
                   SIM_PAGE))
            sim_violation(&W.s, "after the last barrier the home of page %u lacks a write", p);
    }
}

/* Everything finished: nothing may be left in flight or half done. */
void check_end(void)
{
    struct sim *s = &W.s;
    int r, p, t;
    uint64_t id;
    for (r = 0; r < s->n; r++) {
        struct srank *sr = &s->r[r];
        if (sr->dead)
            continue;
        for (t = 0; t < W.nthreads; t++)
            if (!thread_done(&W.th[r][t]))
                sim_violation(s, "hang: rank %d thread %d waits in %s (phase %d) and no step "
                              "is possible", r, t, task_names[W.th[r][t].tasks[W.th[r][t].pc].kind],
                              W.th[r][t].phase);
        if (W.dropped >= 0) {
            if (!W.dropped_finalized && !core_failed(&sr->core))
                sim_violation(s, "rank %d never learnt that rank %d died", r, W.dropped);
            continue;
        }
        if (core_failed(&sr->core))
            sim_violation(s, "rank %d failed: %s", r, sr->core.failure);
        for (p = 0; p < s->n; p++)
            if (s->ch[r][p].len)
                sim_violation(s, "%u messages from rank %d to %d left over", s->ch[r][p].len, r,
                              p);
        for (id = 0; id < W.npages; id++)
            if (sr->core.pages[id].pending ||
                (!W.release && page_home(&sr->core, id) == r &&
                 (coh_dir(&sr->coh, id)->busy || coh_dir(&sr->coh, id)->reads ||
                  coh_dir(&sr->coh, id)->lending)))
                sim_violation(s, "rank %d: page %llu still pending or busy", r,
                              (unsigned long long)id);
        if (sr->tp.ring.len || sr->deferred || sr->coh.wait_head || sr->coh.parked ||
            sr->coh.host_waits || sr->coh.lowerings || sr->coh.rc.syncs || sr->coh.rc.host_due ||
            sr->coh.rc.trimming || (sr->coh.rc.room.bits && sr->coh.rc.room.count))
            sim_violation(s, "rank %d: work left in its ring or queues", r);
    }
    if (W.dropped < 0)
        check_homes();
    for (id = 0; id < s->next_id; id++)
        if (id >= s->delivered_cap || s->delivered[id] != 1)
            sim_violation(s, "message %llu was %s", (unsigned long long)id,
                          id >= s->delivered_cap || !s->delivered[id] ? "lost" : "duplicated");
}


/* A page that comes unasked is dropped (coh_serve.c's on_page), so it
 * cannot overwrite a write; but only a requester that asked twice, or a
 * transport that delivered twice, sends one. */
static void check_no_stale_pages(void)
{
    int r;
    for (r = 0; r < W.s.n; r++)
        if (W.s.r[r].coh.stale)
            sim_violation(&W.s, "rank %d: %llu pages came that it had not asked for", r,
                          (unsigned long long)W.s.r[r].coh.stale);
}
