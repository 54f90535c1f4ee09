/* The routes of libdsm/csrc/route.c over random structures (hosts of
 * random sizes, each led by its lowest rank), seeded: every rank reaches
 * every other along connections both ends hold, through at most the two
 * ends' leaders; the way back is the same route reversed (per-pair FIFO
 * order, and check_route's "came the way the route runs"); route_transits
 * counts exactly the pairs whose route passes a rank (a leader ends only
 * once that many finalizes went by: one too many and it never ends); and a
 * host opens at most (its ranks - 1) + (hosts - 1) connections.
 *
 *     simcommroute --seeds A:B      (tests/test_many_ranks.py builds it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ground.h"
#include "route.h"

#define MAX_N 160

static int fail(unsigned seed, const char *what, int a, int b)
{
    printf("seed %u: %s (ranks %d, %d)\n", seed, what, a, b);
    return 1;
}

/* The route from s to d, hops into path (s first): how many ranks on it. */
static int walk(struct route *rts, int s, int d, int *path)
{
    int n = 0, at = s;
    path[n++] = s;
    while (at != d && n <= 4) {
        at = route_next(&rts[at], d);
        path[n++] = at;
    }
    return n;
}

static int one_seed(unsigned seed)
{
    static struct route rts[MAX_N];
    static uint64_t through[MAX_N];
    int leaders[MAX_N], path[8], back[8], hosts = 0, n, r, s, d, i, bad = 0;
    char err[DSM_ERRLEN];
    srand(seed);
    n = 1 + rand() % MAX_N;
    for (r = 0; r < n; r++) {           /* a new host here, or the one before goes on */
        if (!r || rand() % (1 + rand() % 12) == 0)
            hosts++, leaders[r] = r;
        else
            leaders[r] = leaders[r - 1];
    }
    for (r = 0; r < n; r++)
        if (route_init(&rts[r], n, r, leaders, err))
            return fail(seed, err, r, r);
    memset(through, 0, sizeof through);
    for (s = 0; s < n && !bad; s++)
        for (d = 0; d < n && !bad; d++) {
            int len, blen;
            if (s == d)
                continue;
            len = walk(rts, s, d, path);
            if (path[len - 1] != d || len > 4)
                bad = fail(seed, "no route of at most 3 hops", s, d);
            for (i = 1; i < len && !bad; i++)
                if (!route_direct(&rts[0], path[i - 1], path[i]) ||
                    !route_direct(&rts[0], path[i], path[i - 1]))
                    bad = fail(seed, "a hop without a connection", path[i - 1], path[i]);
            for (i = 1; i < len - 1 && !bad; i++) {
                if (path[i] != leaders[s] && path[i] != leaders[d])
                    bad = fail(seed, "a hop that leads neither end", s, d);
                through[path[i]]++;
            }
            blen = walk(rts, d, s, back);
            for (i = 0; i < len && !bad; i++)
                if (blen != len || back[i] != path[len - 1 - i])
                    bad = fail(seed, "the way back is another route", s, d);
        }
    for (r = 0; r < n && !bad; r++) {
        int members = 0;
        for (s = 0; s < n; s++)
            members += leaders[s] == leaders[r];
        if (route_transits(&rts[r]) != through[r])
            bad = fail(seed, "route_transits miscounts the routes through a rank", r, r);
        else if (route_degree(&rts[r]) > (members - 1) + (hosts - 1))
            bad = fail(seed, "more connections than the host's ranks and the other hosts", r, r);
        else if (hosts == n && route_degree(&rts[r]) != n - 1)
            bad = fail(seed, "one rank per host is not the full mesh", r, r);
    }
    for (r = 0; r < n; r++)
        route_free(&rts[r]);
    return bad;
}

int main(int argc, char **argv)
{
    unsigned a, b, seed;
    if (argc != 3 || strcmp(argv[1], "--seeds") || sscanf(argv[2], "%u:%u", &a, &b) != 2) {
        fprintf(stderr, "usage: simcommroute --seeds A:B\n");
        return 2;
    }
    for (seed = a; seed < b; seed++)
        if (one_seed(seed))
            return 1;
    printf("passed %u seeds\n", b - a);
    return 0;
}
