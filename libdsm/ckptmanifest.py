"""A checkpoint generation's manifest: what it says (made when the generation
is complete), whether this job can use it, and which rank loads each of its
files; and the buddy that keeps a copy of a rank's part in buddy memory
(libdsm.checkpoint)."""
from libdsm.ckptstore import CheckpointError, part_name

FORMAT = 1


def buddy_of(rank, hostnames):
    """The rank keeping a copy of rank's part: the next one on another host, or None."""
    size = len(hostnames)
    for step in range(1, size):
        other = (rank + step) % size
        if hostnames[other] != hostnames[rank]:
            return other
    return None


def make(gen, every, page_size, npages, hosts):
    """The manifest of generation gen; every: each rank's (runs, nbytes, crc,
    state nbytes, state crc, state blob or None, home runs)."""
    return {"format": FORMAT, "generation": gen, "ranks": len(every),
            "page_size": page_size, "pages": npages, "hosts": hosts,
            "homes": [e[6] for e in every],
            "parts": [{"name": part_name("part", r), "runs": runs, "nbytes": n, "crc": c}
                      for r, (runs, n, c, _, _, _, _) in enumerate(every)],
            "states": [{"name": part_name("state", r), "nbytes": n, "crc": c}
                       for r, (_, _, _, n, c, _, _) in enumerate(every)]}


def read(store, gen):
    """Generation gen's manifest, or {"error": why it cannot be read}."""
    try:
        return store.manifest(gen)
    except CheckpointError as e:
        return {"error": str(e)}


def plan(doc, holders, page_size, npages, size):
    """(problem, {file name: rank loading it}): why doc cannot be used by a
    job of size ranks mapping npages pages of page_size, or who loads what
    (holders: {file name: the ranks that have it})."""
    if "error" in doc:
        return doc["error"], None
    if doc.get("format") != FORMAT or doc.get("page_size") != page_size or \
            doc.get("pages") != npages:
        return ("its manifest does not match this job (format %s, %s pages of %s bytes; "
                "this job maps %d pages of %d: give it the same DSM_SIZE)"
                % (doc.get("format"), doc.get("pages"), doc.get("page_size"),
                   npages, page_size)), None
    loaders = {}
    for i, entry in enumerate(doc["parts"] + doc["states"]):
        ranks = holders.get(entry["name"], [])
        if not ranks:
            return "%s is on no rank of this job" % entry["name"], None
        index = i % len(doc["parts"])
        loaders[entry["name"]] = index % size if index % size in ranks else ranks[0]
    return None, loaders

