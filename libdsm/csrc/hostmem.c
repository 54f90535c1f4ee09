/* Layer 1: host-shared memory (DSM_SHARE=host).  Python hands the core the
 * memfd that the lowest rank of the host created and passed to the others
 * (libdsm/hostshare.py); the region maps it instead of a memfd of its own,
 * every page read/write from the start, and the control area after the
 * region is mapped here for hostsync.c.
 *
 * Like api.c, this keeps the one real process's state in a global: the
 * attachment comes before dsm_start, through its own entry point, so that
 * the configuration struct stays as it is. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "hostmem.h"

static struct hostmem H = { .memfd = -1 };

uint64_t dsm_host_state_bytes(uint64_t size)
{
    uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE), bytes = size / ps * sizeof(uint64_t);
    return (bytes + ps - 1) / ps * ps;
}

int dsm_host_attach(int memfd, int nlocal, int index, int nhosts, char *err)
{
    if (H.c || H.memfd >= 0) {
        dsm_err(err, "host-shared memory is already attached in this process");
        return DSM_ESTATE;
    }
    if (memfd < 0 || nlocal < 1 || index < 0 || index >= nlocal || nhosts < 1 ||
        nlocal > HOST_MAX_LOCAL) {
        dsm_err(err, "host-shared memory: memfd %d, rank %d of %d on the host (at most %d "
                "on one of %d hosts)", memfd, index, nlocal, HOST_MAX_LOCAL, nhosts);
        return DSM_EINVAL;
    }
    H.nhosts = nhosts;
    H.memfd = memfd;
    H.nlocal = nlocal;
    H.index = index;
    return DSM_OK;
}

int hostmem_hosts(void)
{
    return H.memfd >= 0 || H.ctrl ? H.nhosts : 0;
}

struct hostmem *hostmem_get(void)
{
    return H.ctrl ? &H : NULL;
}

int hostmem_claim(struct core *c, uint64_t size, int *fd, char *err)
{
    struct stat st;
    void *ctrl, *state = NULL;
    uint64_t state_bytes = dsm_host_state_bytes(size);
    *fd = -1;
    if (H.memfd < 0)
        return DSM_OK;
    if (fstat(H.memfd, &st))
        return dsm_err_sys(err, errno, "fstat of the host's shared memfd");
    if ((uint64_t)st.st_size != size + HOST_CTRL_BYTES + state_bytes) {
        dsm_err(err, "the host's shared memfd holds %lld bytes, not the region's %llu, "
                "the %llu of its control area and the %llu of its page states",
                (long long)st.st_size, (unsigned long long)size,
                (unsigned long long)HOST_CTRL_BYTES, (unsigned long long)state_bytes);
        return DSM_EINVAL;
    }
    ctrl = mmap(NULL, HOST_CTRL_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, H.memfd,
                (off_t)size);
    if (ctrl == MAP_FAILED)
        return dsm_err_sys(err, errno, "control area of the host's shared memfd");
    if (H.nhosts > 1) {
        state = mmap(NULL, state_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, H.memfd,
                     (off_t)(size + HOST_CTRL_BYTES));
        if (state == MAP_FAILED) {
            munmap(ctrl, HOST_CTRL_BYTES);
            return dsm_err_sys(err, errno, "page states of the host's shared memfd");
        }
        H.state = state;
        H.state_bytes = state_bytes;
        c->host_state = state;
    }
    H.ctrl = ctrl;
    H.c = c;
    *fd = H.memfd;
    H.memfd = -1;
    return DSM_OK;
}

void hostmem_release(void)
{
    if (H.ctrl)
        munmap(H.ctrl, HOST_CTRL_BYTES);
    if (H.state)
        munmap(H.state, H.state_bytes);
    if (H.c)
        H.c->host_state = NULL;
    H.ctrl = NULL;
    H.state = NULL;
    H.c = NULL;
    H.across = NULL;
}
