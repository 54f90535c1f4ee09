/* Layer 1: the connection structure and the routes over it, as pure
 * functions of each rank's host leader (no I/O, no lock).
 *
 * The ranks of a host (a host key: libdsm/mesh.py) connect to its leader,
 * and the leaders connect to each other; with one rank per host that is
 * the full mesh.  Any other pair talks through the leaders: a -> leader(a)
 * -> leader(b) -> b, skipping the hops that are a or b.  A route is fixed
 * and the reverse of the way back, so per-pair FIFO order holds, and a
 * message from rank s always comes over the connection this rank's route
 * to s leaves by. */
#ifndef DSM_ROUTE_H
#define DSM_ROUTE_H
#include <stdint.h>

struct route {
    int nranks, self;
    int *leader;                /* each rank's host leader (leader[leader[r]] == leader[r]) */
};

/* leaders NULL: every rank leads its own host (the full mesh).  DSM_OK,
 * or DSM_EINVAL with err filled (a leader out of range or not leading
 * itself), DSM_ESYS when out of memory. */
int route_init(struct route *rt, int nranks, int self, const int *leaders, char *err);
void route_free(struct route *rt);
/* Do ranks a and b hold a connection to each other? */
int route_direct(const struct route *rt, int a, int b);
/* The rank that a message from this rank to dst (not this rank) goes to next. */
int route_next(const struct route *rt, int dst);
/* How many ordered pairs (s, d) of other ranks route through this rank:
 * the DSM_FINALIZE messages it passes on before the job can end. */
uint64_t route_transits(const struct route *rt);
/* The ranks this rank holds a connection to. */
int route_degree(const struct route *rt);
#endif
