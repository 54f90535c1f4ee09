/* Layer 1: the connection structure and the routes over it (route.h). */
#include <errno.h>
#include <stdlib.h>
#include "ground.h"
#include "route.h"

int route_init(struct route *rt, int nranks, int self, const int *leaders, char *err)
{
    int r;
    rt->nranks = nranks;
    rt->self = self;
    if (!(rt->leader = malloc((size_t)nranks * sizeof *rt->leader)))
        return dsm_err_sys(err, ENOMEM, "the route table of %d ranks", nranks);
    for (r = 0; r < nranks; r++)
        rt->leader[r] = leaders ? leaders[r] : r;
    for (r = 0; r < nranks; r++)
        if (rt->leader[r] < 0 || rt->leader[r] >= nranks ||
            rt->leader[rt->leader[r]] != rt->leader[r]) {
            dsm_err(err, "rank %d: its host leader %d is not a rank leading its own host",
                    r, rt->leader[r]);
            route_free(rt);
            return DSM_EINVAL;
        }
    return DSM_OK;
}

void route_free(struct route *rt)
{
    free(rt->leader);
    rt->leader = NULL;
}

int route_direct(const struct route *rt, int a, int b)
{
    const int *l = rt->leader;
    return a != b && ((l[a] == a && l[b] == b) || l[a] == b || l[b] == a);
}

int route_next(const struct route *rt, int dst)
{
    int me = rt->self;
    if (route_direct(rt, me, dst))
        return dst;
    return rt->leader[me] != me ? rt->leader[me] : rt->leader[dst];
}

/* The pairs whose route passes this rank: those with this rank as the
 * leader of one end and neither end itself (a route's only hops are the
 * two ends' leaders). */
uint64_t route_transits(const struct route *rt)
{
    uint64_t members = 0, n = (uint64_t)rt->nranks;
    int r;
    if (rt->leader[rt->self] != rt->self)
        return 0;
    for (r = 0; r < rt->nranks; r++)
        members += r != rt->self && rt->leader[r] == rt->self;
    /* (s, d) with s a member: n - 2 choices of d; the same with d a member;
     * the pairs of two members were counted twice */
    return members ? 2 * members * (n - 2) - members * (members - 1) : 0;
}

int route_degree(const struct route *rt)
{
    int r, n = 0;
    for (r = 0; r < rt->nranks; r++)
        n += route_direct(rt, rt->self, r);
    return n;
}
