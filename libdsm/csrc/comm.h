/* Layer 1: the socket backend of the transport: the comm thread. */
#ifndef DSM_COMM_H
#define DSM_COMM_H
#include "transport.h"

struct comm;

/* Take over the peer sockets (peer_fds[r] for each rank r this rank holds
 * a connection to in the structure of `leaders`: route.h) and build the
 * transport over them; the thread starts with comm_run.  On failure
 * nothing is left allocated and the sockets are still the caller's. */
int comm_open(struct transport *t, struct core *c, const int *peer_fds, const int *leaders,
              int master_fd, char *err);
/* Start the comm thread.  `wait_reply`: waiting threads receive their
 * replies themselves (core.poll). */
int comm_run(struct transport *t, int wait_reply, char *err);
/* After the thread ended (phase FINISHED) or never started: free it all. */
void comm_close(struct transport *t);
/* Wait for the comm thread to end. */
void comm_join(struct transport *t);
#endif
