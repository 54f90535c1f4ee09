/* Layer 3: SIGUSR1, what each thread of the core waits for (a hung job's
 * stacks, services/stacks.py).  Like fault.c, a signal handler's state is
 * the one global here: the core it describes and the action it chains to. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "waitsig.h"

static struct core *described;
static struct sigaction before;     /* faulthandler's, under dsmexec */

/* Any thread, at any point: async-signal-safe but for snprintf of integers
 * (as ground.c's say). */
static void on_usr1(int sig, siginfo_t *info, void *uctx)
{
    char waits[3072], head[96];
    int saved = errno, n;
    uint64_t len = core_describe_waits(described, waits, sizeof waits);
    n = snprintf(head, sizeof head, "libdsm: rank %d: %s\n", described->rank,
                 len ? "its threads wait in libdsm for:" : "no thread waits in libdsm");
    if (write(2, head, (size_t)n) < 0 || (len && write(2, waits, len) < 0))
        n = 0;                      /* stderr is gone: the stacks will be too */
    errno = saved;
    if ((before.sa_flags & SA_SIGINFO) && before.sa_sigaction)
        before.sa_sigaction(sig, info, uctx);
    else if (!(before.sa_flags & SA_SIGINFO) && before.sa_handler != SIG_DFL &&
             before.sa_handler != SIG_IGN)
        before.sa_handler(sig);
}

int waitsig_install(struct core *c, char *err)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    described = c;
    if (sigaction(SIGUSR1, &sa, &before))
        return dsm_err_sys(err, errno, "sigaction(SIGUSR1)");
    return DSM_OK;
}

void waitsig_remove(void)
{
    sigaction(SIGUSR1, &before, NULL);
}
