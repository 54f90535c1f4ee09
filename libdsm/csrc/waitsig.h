/* Layer 3: SIGUSR1 says what each thread of the core waits for. */
#ifndef DSM_WAITSIG_H
#define DSM_WAITSIG_H
#include "ground.h"

/* From now on SIGUSR1 (what dsmexec sends a hung job for its stacks) first
 * writes core_describe_waits of c to stderr, then runs whatever handled
 * SIGUSR1 before (faulthandler's stack dump, under dsmexec).  DSM_OK or
 * DSM_ESYS with err filled. */
int waitsig_install(struct core *c, char *err);
/* Give SIGUSR1 back to what had it before waitsig_install. */
void waitsig_remove(void);
#endif
