import libdsm  # A deadlock for the tests (test_stacks.py, test_failed_report.py): args ignored.
dsm = libdsm.init()
lock = dsm.lock(0)
if dsm.rank == 0:
    lock.acquire()              # rank 0 holds lock 0 into the second barrier
dsm.barrier()
print("ready", flush=True)
if dsm.rank == 1:
    lock.acquire()              # ACQUIRE_LINE: rank 1 waits for it for ever
dsm.barrier()                   # BARRIER_LINE
dsm.finalize()
