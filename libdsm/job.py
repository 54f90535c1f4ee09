"""Joining the job: the context dsmexec started this rank in, the checked
configuration, the mesh between ranks, starting the C core, and the
notices a rank sends dsmexec (INIT, FINALIZED); a child forked after init
is no rank, and refused."""
import faulthandler
import os

from libdsm import _binding, config, hostshare, layout, mesh
from libdsm.errors import ConfigError, StateError
from libdsm_services import wire


def context():
    """The job dsmexec started us in, or None when run alone."""
    try:
        from libdsm_services import rank
    except ImportError:
        return None
    return rank.CONTEXT


def start(ctx, options):
    """Check the configuration, connect the ranks and start the core: map
    the region and its system area, install the handler, start the comm
    thread.  Returns the configuration."""
    here = ctx.hostnames.count(ctx.hostnames[ctx.rank]) if ctx else 1
    cfg = config.resolve(_binding.page_size(), ranks_here=here, **options)
    rank, size = (ctx.rank, ctx.size) if ctx else (0, 1)
    host = ctx.hostnames[rank] if ctx else None
    mapped = layout.mapped_bytes(cfg["size"])
    leaders = mesh.structure(ctx.hostnames if ctx else ["localhost"], cfg["share"], cfg["vhosts"])
    mesh.check_size(leaders, cfg["share"])
    fds = [None]
    handover = hostshare.Handover(ctx, mapped, cfg["connect_timeout"], cfg["vhosts"]) \
        if cfg["share"] == "host" else None
    if ctx:
        major, minor = _binding.core_version()
        shape = (mapped, cfg["base"], cfg["block_pages"], _binding.page_size(),
                 major << 16 | minor, config.SHARES.index(cfg["share"]), cfg["vhosts"])
        fds = mesh.build(ctx, shape, cfg["connect_timeout"], leaders)
    if handover:                        # every rank is up: the memfd can be handed on
        _binding.host_attach(*handover.take())
    if not faulthandler.is_enabled():
        faulthandler.enable()
    _binding.start(rank, size, cfg["base"], mapped, cfg["block_pages"], cfg["hold_us"],
                   layout.core_locks(cfg["locks"]), cfg["readahead"], cfg["spin_us"],
                   ctx.master.fileno() if ctx else -1,
                   fds,
                   cfg["debug"], host, cfg["consistency"], -(-cfg["twin_limit"] >> 20),
                   heartbeat_s=cfg["heartbeat_s"], hosts=ctx.hostnames if ctx else None,
                   wait=cfg["wait"], leaders=leaders)
    modes = _binding.agree(config.CONSISTENCIES.index(cfg["consistency"]), size)
    if len(set(modes)) > 1:
        theirs = next(r for r, m in enumerate(modes) if m != modes[rank])
        raise ConfigError("the ranks use different consistency: this rank (%d) %r, rank %d %r; "
                          "give every rank the same DSM_CONSISTENCY"
                          % (rank, cfg["consistency"], theirs,
                             config.CONSISTENCIES[modes[theirs]]), rank, host)
    cfg["one_host"] = len(set(leaders)) == 1
    cfg["leaders"] = leaders
    return cfg


def forbid_fork(collectives, rank, host):
    """In a child forked from now on, every call refuses (through
    collectives.check, which every entry point makes), as the C core refuses
    its memory: the child has no comm thread and is no rank of the job."""
    def child():
        parent = os.getppid()

        def refuse():
            raise StateError("this process was forked after libdsm.init() in process %d, and "
                             "only that process can use the DSM: fork before init(), or start "
                             "children with multiprocessing's 'spawn'" % parent, rank, host)
        collectives.check = refuse
    os.register_at_fork(after_in_child=child)


def joined(ctx):
    """Tell dsmexec (if there is one) that this rank called init()."""
    if ctx:
        ctx.notify(wire.Message.INIT)


def finished(ctx):
    """Tell dsmexec (if there is one) that this rank finalized."""
    if ctx:
        ctx.notify(wire.Message.FINALIZED)
