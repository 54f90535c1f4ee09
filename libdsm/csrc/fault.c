/* SIGSEGV dispatch.  The handler decides one thing: is the address inside
 * the region?  If so the fault goes to the coherence layer, which returns
 * once the access may be retried; if not, it goes to whatever handler was
 * installed before us (faulthandler, usually), so a genuine crash still
 * prints its traceback and kills the process. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>
#include "internal.h"

static struct sigaction previous;

/* Was the faulting access a write?  x86-64 reports it in the page-fault
 * error code; elsewhere we say "read", and a write then faults a second
 * time on the read-only copy, which is correct, only slower. */
static int is_write(void *uctx, uint64_t page)
{
#if defined(__x86_64__)
    (void)page;
    return (((ucontext_t *)uctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    (void)uctx;
    return st.pages[page].prot == DSM_PROT_READ;
#endif
}

/* Hand a fault we do not own to the previous handler. */
static void chain(int sig, siginfo_t *si, void *uctx)
{
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, si, uctx);
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
    } else {
        /* Default action: restore it; the access faults again and kills us. */
        signal(sig, SIG_DFL);
    }
}

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    int saved = errno;
    if (st.app && a >= (uintptr_t)st.app && a < (uintptr_t)st.app + st.size) {
        uint64_t page = (a - (uintptr_t)st.app) / st.page_size;
        coh_fault(page, is_write(uctx, page));
    } else {
        chain(sig, si, uctx);
    }
    errno = saved;
}

/* Install the handler, remembering the current one to chain to. */
int fault_install(char *err)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old)) {
        if (err)
            dsm_err(err, "sigaction(SIGSEGV): %s", strerror(errno));
        return DSM_ESYS;
    }
    previous = old;
    return DSM_OK;
}

/* Reinstall the handler if another one took its place (faulthandler.enable()
 * run after us does that).  The displaced handler becomes the one we chain to.
 * Returns 1 if it reinstalled, 0 if ours was in place. */
int fault_ensure(void)
{
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur))
        return DSM_ESYS;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv)
        return 0;
    return fault_install(NULL) == DSM_OK ? 1 : DSM_ESYS;
}
