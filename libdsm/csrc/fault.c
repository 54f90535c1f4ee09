/* Layer 3: SIGSEGV entry.  The handler decides one thing: is the address
 * inside the region?  If so the fault goes to the registered function (the
 * coherence layer), which returns once the access may be retried; if not,
 * it goes to whatever handler was installed before us (faulthandler,
 * usually), so a genuine crash still prints its traceback and kills the
 * process.  A signal handler can only find its state in globals: these,
 * set once before the handler is installed.  (The core's other globals are
 * api.c's one `struct dsm` and ground.c's per-thread errno, id and lock mask;
 * the layers between keep their state in structs.) */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>
#include "fault.h"
#include "ground.h"

static struct sigaction previous;
static uintptr_t lo, hi;
static fault_fn handler_fn;
static void *handler_ctx;

/* Was the faulting access a write?  x86-64 reports it in the page-fault
 * error code; elsewhere we do not know. */
static int is_write(void *uctx)
{
#if defined(__x86_64__)
    return (((ucontext_t *)uctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    (void)uctx;
    return -1;
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
    if (a >= lo && a < hi)
        handler_fn(handler_ctx, a - lo, is_write(uctx));
    else
        chain(sig, si, uctx);
    errno = saved;
}

static int install(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old))
        return -1;
    previous = old;
    return 0;
}

int fault_install(uintptr_t base, uint64_t size, fault_fn fn, void *ctx, char *err)
{
    lo = base;
    hi = base + size;
    handler_fn = fn;
    handler_ctx = ctx;
    return install() ? dsm_err_sys(err, errno, "sigaction(SIGSEGV)") : DSM_OK;
}

/* The displaced handler becomes the one we chain to. */
int fault_ensure(void)
{
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur))
        return DSM_ESYS;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv)
        return 0;
    return install() ? DSM_ESYS : 1;
}
