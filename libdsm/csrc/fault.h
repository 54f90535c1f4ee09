/* Layer 3: SIGSEGV entry. */
#ifndef DSM_FAULT_H
#define DSM_FAULT_H
#include <stdint.h>

/* Called for a fault at `offset` into the range; write is 1, 0, or -1 when
 * the CPU does not say.  It returns once the access may be retried. */
typedef void (*fault_fn)(void *ctx, uint64_t offset, int write);

/* Install the handler for faults in [base, base + size), remembering the
 * current handler to chain to: DSM_OK or DSM_ESYS with err filled. */
int fault_install(uintptr_t base, uint64_t size, fault_fn fn, void *ctx, char *err);
/* Reinstall the handler if something (faulthandler) replaced it: 1 if it
 * had to, 0 if it was in place, DSM_ESYS. */
int fault_ensure(void);
#endif
