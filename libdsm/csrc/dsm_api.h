/* The C core's public API: the only declarations the cffi binding sees.
 * This file is fed to ffi.cdef() as it is, so it holds plain declarations
 * only: no includes, no guards, no macros beyond integer constants. */

#define DSM_CORE_MAJOR 2
#define DSM_CORE_MINOR 4
#define DSM_ERRLEN 256

/* Return codes.  Every call that can fail fills a caller's err[DSM_ERRLEN]
 * with "what: why". */
#define DSM_OK 0
#define DSM_EINVAL -1   /* bad configuration */
#define DSM_EADDR -2    /* the fixed address is already mapped */
#define DSM_ELIMIT -3   /* the mapping would exceed vm.max_map_count */
#define DSM_EPEER -4    /* a peer was lost or broke the protocol */
#define DSM_ESYS -5     /* a system call failed: dsm_last_errno() says which errno */
#define DSM_ESTATE -6   /* called in the wrong state */
#define DSM_ECOLL -7    /* ranks called different collectives */
#define DSM_ENOTHELD -8 /* released a lock this rank does not hold */
#define DSM_ETIMEDOUT -9 /* pages stayed pinned elsewhere past the timeout */

/* Collectives (dsm_collective): what, how to combine, of which type. */
#define DSM_COLL_BARRIER 1
#define DSM_COLL_BCAST 2
#define DSM_COLL_REDUCE 3   /* elementwise over typed arrays */
#define DSM_COLL_GATHER 4   /* every rank's bytes, tagged with its rank */
#define DSM_ROOT_ALL 65535  /* reduce and gather: every rank gets the result */
#define DSM_OP_SUM 1
#define DSM_OP_PROD 2
#define DSM_OP_MIN 3
#define DSM_OP_MAX 4
#define DSM_OP_LAND 5       /* logical: 1 or 0 in the operands' type (nonzero is true) */
#define DSM_OP_LOR 6
#define DSM_OP_LXOR 7
#define DSM_OP_BAND 8       /* bitwise: integer types only */
#define DSM_OP_BOR 9
#define DSM_OP_BXOR 10
#define DSM_DT_F64 1
#define DSM_DT_F32 2
#define DSM_DT_I64 3
#define DSM_DT_I32 4
#define DSM_DT_I16 5
#define DSM_DT_I8 6
#define DSM_DT_U64 7
#define DSM_DT_U32 8
#define DSM_DT_U16 9
#define DSM_DT_U8 10

#define DSM_SEQUENTIAL 0
#define DSM_RELEASE 1

#define DSM_PROT_NONE 0
#define DSM_PROT_READ 1
#define DSM_PROT_RW 2

struct dsm_config {
    uint64_t base;         /* fixed address of the application view */
    uint64_t size;         /* region bytes, a multiple of the page size */
    uint32_t block_pages;  /* block-cyclic unit of the round-robin homes */
    uint32_t hold_us;      /* how long a received page is kept before it is given away */
    uint32_t nlocks;       /* locks 0 .. nlocks - 1 exist */
    uint32_t readahead;    /* most pages a sequential read fault fetches (1: off) */
    uint32_t spin_us;      /* a waiting thread yields this long before it sleeps */
    int rank;
    int nranks;
    int master_fd;         /* connection to dsmexec, watched for close; -1 if none */
    int debug;             /* trace protocol events to stderr */
    int consistency;       /* DSM_SEQUENTIAL or DSM_RELEASE */
    uint32_t twin_limit_mb;/* release mode: twins a rank keeps before sending pages home early */
    uint32_t heartbeat_ms; /* a peer silent this long is declared dead; 0: never */
    int wait_reply;        /* a waiting thread receives its reply itself (else the comm thread) */
};

struct dsm_stats {
    uint64_t read_faults;     /* faults that requested a read copy */
    uint64_t write_faults;    /* faults that requested ownership */
    uint64_t msgs_sent;
    uint64_t msgs_recv;
    uint64_t pages_sent;      /* pages sent with their data */
    uint64_t invalidations;   /* copies this rank dropped on DSM_INV */
    uint64_t deferred;        /* requests held back by the hold window */
    uint64_t pages_prefetched;/* pages requested beyond the faulting one */
    uint64_t ring_full;       /* times a thread found the ring to the comm thread full */
    uint64_t twins;           /* release mode: pages twinned at a first write */
    uint64_t diffs;           /* release mode: diffs sent home */
    uint64_t diff_bytes;      /* ... and their bytes */
    uint64_t early_flushes;   /* pages sent home early to bound the twins */
    uint64_t twin_peak;       /* release mode: the most bytes of twins kept at once (a host's
                               * leader: the host's) */
    uint64_t invalidations_saved; /* writes that needed no message (sequential mode asks the home) */
    uint64_t homes_moved;     /* pages whose home moved: by dsm_place, or to a single writer */
    uint64_t vma_runs;        /* protection runs in the region now */
    uint64_t vma_budget;      /* runs the region may use */
    uint64_t fault_wait_ns;   /* time application threads spent in faults */
    uint64_t sync_wait_ns;    /* ... in barriers and other collectives */
    uint64_t lock_wait_ns;    /* ... acquiring locks */
    uint64_t readahead_early; /* read-ahead runs asked for at a trigger page, before the last ended */
    uint64_t opened_by_waiter;/* pages the faulting thread opened itself (no TLB flush elsewhere) */
    uint64_t connections;     /* ranks this rank holds a connection to (others: via leaders) */
    uint64_t forwarded;       /* messages this rank passed on for others, as a host leader */
    uint64_t host_maps;       /* share=host on several hosts: faults the host's copy served
                               * with no message (an mprotect); read_faults and write_faults
                               * count those that asked the host's leader */
    uint64_t host_msgs;       /* ... messages sent within the host (DSM_HREQ, DSM_HGRANT,
                               * DSM_HINV, DSM_HINV_ACK), counted in msgs_sent too */
};

/* Trace events (dsm_trace_start): what happened, when, for how long. */
#define DSM_EV_FAULT 1      /* a fault: arg page, write, dur its wait */
#define DSM_EV_SERVE 2      /* a page's data sent: arg page, peer the requester, write */
#define DSM_EV_SYNC 3       /* a barrier or collective: arg its kind (DSM_COLL_*), dur */
#define DSM_EV_LOCK 4       /* a lock acquired: arg the lock, dur the wait */
struct dsm_event {
    uint64_t start_ns;      /* CLOCK_MONOTONIC */
    uint64_t dur_ns;
    uint64_t arg;
    uint16_t kind;          /* DSM_EV_* */
    uint16_t peer;
    uint8_t write;
    uint8_t pad[3];
};

void dsm_core_version(int *major, int *minor);
/* The libdsm package version this core was built for (stamped by the build). */
const char *dsm_build_version(void);
/* The errno behind the last DSM_ESYS returned in this thread. */
int dsm_last_errno(void);
/* After a DSM_EPEER: the rank whose loss failed the job (a closed or reset
 * connection, a silent peer), or -1 when the failure names no lost rank. */
int dsm_failed_peer(void);
/* One line per thread waiting in the core: "thread TID: lock N",
 * "collective KIND #EPOCH", "page P from rank HOME", "pages FIRST count
 * N".  At most len bytes, NUL-terminated; returns the bytes written.  Safe
 * in a signal handler (SIGUSR1 when a job hangs): no lock, no allocation. */
uint64_t dsm_describe_waits(char *buf, uint64_t len);
uint64_t dsm_page_size(void);

/* Map the region, install the SIGSEGV handler and start the comm thread.
 * leaders[r] is rank r's host leader (libdsm/mesh.py; NULL: every rank its
 * own, the full mesh); peer_fds[r] is the connected socket to rank r where
 * this rank and r hold one (the ranks of a host and their leader, the
 * leaders among themselves), else -1, ignored for r == rank; the core owns
 * them from here on.  Without DSM_SHARE=host a job has at most
 * DSM_MAX_RANK_COPIES ranks (copysets are 64-bit masks of ranks). */
int dsm_start(const struct dsm_config *cfg, const int *peer_fds, const int *leaders, char *err);

/* Fetch pages [first, first + n) for reading (write = 0) or writing, and
 * wait until they are all here. */
int dsm_prefetch(uint64_t first, uint64_t n, int write, char *err);

/* Collective: return when every rank has called it.  Ranks that call
 * different collectives get DSM_ECOLL instead of a hang. */
int dsm_barrier(char *err);

/* Collective: kind DSM_COLL_*, run in O(log N) exchanges by the comm
 * threads.  `sig` is the caller's identity of its arguments (a shape and
 * type hash): ranks whose kind, root, op, dtype or sig differ all get
 * DSM_ECOLL.  BCAST: the root's bytes; REDUCE: `len` bytes of dtype,
 * combined with op; GATHER: a sequence of (u32 rank, u32 len, bytes), one
 * per rank.  Ranks that get a result (every rank but the root for BCAST;
 * the root, or all for DSM_ROOT_ALL, otherwise) find it in *out, a buffer
 * of *out_len bytes to give back with dsm_buffer_free; others get NULL. */
int dsm_collective(int kind, int root, int op, int dtype, uint64_t sig, const void *data,
                   uint64_t len, void **out, uint64_t *out_len, char *err);
void dsm_buffer_free(void *buf);

/* Collective, right after dsm_start: every rank's `value` into all[rank],
 * with nothing else synchronised (it checks that the ranks agree on their
 * configuration before any of it matters). */
int dsm_agree(uint64_t value, uint64_t *all, char *err);

/* Global locks, each kept by its round-robin home rank (lock % nranks). */
int dsm_lock_acquire(uint32_t lock, char *err);
int dsm_lock_release(uint32_t lock, char *err);

/* Collective: DSM_FINALIZE to every peer, drain, close, join the thread. */
int dsm_finalize(char *err);

/* Reinstall the handler if something (faulthandler) replaced it.
 * Returns 1 if it had to, 0 if it was in place, <0 if not started. */
int dsm_handler_ensure(void);

/* Local protection of a page (DSM_PROT_*), or -1 if out of range. */
int dsm_page_prot(uint64_t page);

/* How often this rank gave up each of pages [first, first + n): served it
 * to another rank or dropped its copy.  High counts mean thrashing. */
int dsm_pages_given_up(uint64_t first, uint64_t n, uint32_t *out);

/* Home rank of a page (round-robin until placed), or -1 if out of range. */
int dsm_page_home(uint64_t page);

/* Collective: pages [first, first + n) get homes[i] as the home of page
 * first + i, every rank passing the same homes (else DSM_ECOLL).  Each new
 * home takes its pages for writing first.  No thread of any rank may touch
 * the region meanwhile.  Release mode moves no home (its homes follow
 * single writers): there it is a barrier. */
int dsm_place(uint64_t first, uint64_t n, const uint16_t *homes, char *err);

void dsm_get_stats(struct dsm_stats *out);

/* Record events from now on into a buffer of `capacity` records (once per
 * process, after dsm_start). */
int dsm_trace_start(uint64_t capacity, char *err);
/* Records kept (and in *dropped those that did not fit); copy up to max
 * of them, from the first, into out and return how many were copied. */
uint64_t dsm_trace_count(uint64_t *dropped);
uint64_t dsm_trace_read(struct dsm_event *out, uint64_t max);

/* Fetch pages [first, first + n) (for writing if write) and pin them: they
 * stay here, not given away, until dsm_unpin.  All or nothing; a page
 * pinned by another rank is waited for up to timeout_ms (DSM_ETIMEDOUT). */
int dsm_pin(uint64_t first, uint64_t n, int write, uint32_t timeout_ms, char *err);
/* Drop one pin of each page of [first, first + n); what waited runs. */
int dsm_unpin(uint64_t first, uint64_t n, char *err);

/* libdsm.sync.  Acquire lock, waiting at most timeout_ms (0xFFFFFFFF: no
 * limit; 0: only if it is free now, never queueing): DSM_ETIMEDOUT when
 * not granted.  A request given up on is handed on when its grant comes. */
int dsm_lock_acquire_within(uint32_t lock, uint32_t timeout_ms, char *err);
/* 1 if this rank holds the lock, else 0. */
int dsm_lock_held(uint32_t lock);
/* Counted mailboxes: post one wake-up for key to rank; take one for key
 * here, waiting at most timeout_ms (0xFFFFFFFF: no limit; DSM_ETIMEDOUT).
 * Posts made before the take are counted, so none is lost. */
int dsm_post(int rank, uint64_t key, char *err);
int dsm_take(uint64_t key, uint32_t timeout_ms, char *err);

/* libdsm.checkpoint.  The region's memfd (the whole mapping, region and
 * system area, at offset 0): lseek SEEK_DATA/SEEK_HOLE on it finds the
 * pages ever written here without touching them; -1 when not running. */
int dsm_region_fd(void);
/* Checkpoint events for --trace: arg packs the generation (bits 40..63)
 * and the bytes this rank wrote or read (bits 0..39). */
#define DSM_EV_CHECKPOINT 5 /* a checkpoint: dur the whole collective */
#define DSM_EV_RESTORE 6    /* a restore at init: dur the whole collective */
#define DSM_EV_GEN_SHIFT 40
/* Record an event of kind that began at start_ns (CLOCK_MONOTONIC) and
 * lasted dur_ns, when tracing. */
void dsm_trace_note(int kind, uint64_t arg, uint64_t start_ns, uint64_t dur_ns);
/* Each page of [first, first + n)'s protection here (DSM_PROT_*) into
 * out[n]; an error when not running or past the region. */
int dsm_page_prots(uint64_t first, uint64_t n, uint8_t *out, char *err);
/* Host-shared memory (DSM_SHARE=host; libdsm/hostshare.py).  Before
 * dsm_start: the region will map `memfd` (the region's bytes, a control
 * area of DSM_HOST_CTRL_BYTES, then dsm_host_state_bytes of the host's
 * page states) instead of a memfd of its own; this rank is `index` of the
 * `nlocal` ranks of its host, in a job on `nhosts` hosts (1: every page
 * read/write; more: the protocol runs between the hosts' leaders, the
 * lowest rank of each, and the pages come and go per host).  The core owns
 * memfd from here on. */
int dsm_host_attach(int memfd, int nlocal, int index, int nhosts, char *err);
/* The barrier of dsm_host_collective: returns when every rank of the job
 * has called it (on one host, through the shared control area alone).
 * DSM_EPEER once the job failed; DSM_ESTATE when not in host-shared mode
 * or not running. */
int dsm_host_barrier(char *err);
/* dsm_collective through the shared control area, with the same results
 * (a reduce combines in the same order) and the same DSM_ECOLL when ranks
 * call different ones.  On one host no message; across hosts, in
 * sequential mode, in two levels: the ranks of each host meet in its
 * control area and the hosts' leaders alone exchange messages (release
 * mode across hosts: DSM_ESTATE, use dsm_collective). */
int dsm_host_collective(int kind, int root, int op, int dtype, uint64_t sig, const void *data,
                        uint64_t len, void **out, uint64_t *out_len, char *err);
/* Locks below DSM_HOST_LOCKS through the shared control area, as
 * dsm_lock_acquire_within, dsm_lock_release and dsm_lock_held. */
int dsm_host_lock_acquire(uint32_t lock, uint32_t timeout_ms, char *err);
int dsm_host_lock_release(uint32_t lock, char *err);
int dsm_host_lock_held(uint32_t lock);
/* dsm_post and dsm_take through the shared control area (a job on one
 * host), no message: the same counting, timeout and errors; a post waits
 * while the rank's mailbox holds posts for 62 other keys not yet taken. */
int dsm_host_post(int rank, uint64_t key, char *err);
int dsm_host_take(uint64_t key, uint32_t timeout_ms, char *err);
/* Before dsm_finalize in host-shared mode: the host collectives that this
 * rank will not join fail, naming it, instead of waiting for it. */
void dsm_host_finalizing(void);
#define DSM_HOST_LOCKS 8192
#define DSM_HOST_CTRL_BYTES 4194304
/* The bytes of the host's page states after the control area, for a region
 * of `size` bytes: a 64-bit word per page, rounded up to whole pages. */
uint64_t dsm_host_state_bytes(uint64_t size);
