/* Layer 1: host-shared memory: the one memfd the ranks of a host map
 * (DSM_SHARE=host), and the small control area after the region in it
 * that hostsync.c synchronises them through. */
#ifndef DSM_HOSTMEM_H
#define DSM_HOSTMEM_H
#include "ground.h"

#define HOST_CTRL_BYTES 4096

/* The control area, in the memfd right after the region.  Every field is
 * touched with atomics only: the ranks of the host are separate processes. */
struct host_ctrl {
    uint32_t arrived;           /* ranks in the current barrier */
    uint32_t gen;               /* barriers completed: the futex word */
    uint32_t sleepers;          /* ranks asleep on gen: a wake is a syscall only then */
};

/* The attachment of this process (one per process, like api.c's core). */
struct hostmem {
    int memfd;                  /* attached and not yet taken by the region; else -1 */
    int nlocal, index;          /* ranks on this host, and this rank's place among them */
    struct core *c;             /* the core whose region took the memfd */
    struct host_ctrl *ctrl;     /* mapped once the region took the memfd */
};

/* The attachment, or NULL in per-rank mode (nothing attached). */
struct hostmem *hostmem_get(void);
/* For region_map: *fd becomes the attached memfd, now the caller's, with
 * the control area at `size` mapped; -1 in per-rank mode.  DSM_OK, or the
 * error with err filled (a memfd of the wrong size, a failed mmap). */
int hostmem_claim(struct core *c, uint64_t size, int *fd, char *err);
/* After the region is unmapped: the control area too. */
void hostmem_release(void);
#endif
