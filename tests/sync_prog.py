"""The program of tests/test_sync.py: run under dsmexec, it does what the
test asks (locks, condition, event, semaphore, crowd, fullbox, pingpong, barrier_timeout) and prints
lines the test checks.

    sync_prog.py SCENARIO
"""
import os
import sys
import threading

import libdsm
from libdsm import _binding


def expect(exc, fn):
    """The type and text of the exception fn() raises, or 'no error'."""
    try:
        fn()
    except exc as e:
        return "%s: %s" % (type(e).__name__, e)
    return "no error"


def locks(dsm):
    """threading's acquire(blocking, timeout) and locked(); locks by name;
    timed acquires that give up, many times, keep the count exact."""
    lk = dsm.lock("queue")
    print("named lock %d" % lk.index)
    if dsm.rank == 0:
        lk.acquire()
    dsm.barrier()
    if dsm.rank == 1:
        print("while held: try=%s timed=%s locked=%s" % (
            lk.acquire(blocking=False), lk.acquire(timeout=0.05), lk.locked()))
    dsm.barrier()
    if dsm.rank == 0:
        print("holder: locked=%s again=%s" % (lk.locked(), lk.acquire(blocking=False)))
        print("reacquire: " + expect(libdsm.LockError, lk.acquire))
        lk.release()
    dsm.barrier()
    if dsm.rank == 1:
        print("when free: try=%s" % lk.acquire(blocking=False))
        lk.release()
        print("released: locked=%s" % lk.locked())
    print("bad args: " + expect(ValueError, lambda: lk.acquire(False, 1)))
    counter, misses, k = dsm.array(1, "int64"), 0, 100
    for _ in range(k):
        while not lk.acquire(timeout=0.001):
            misses += 1
        counter[0] += 1
        lk.release()
    dsm.barrier()
    print("counter %d of %d" % (counter[0], dsm.size * k))


def condition(dsm):
    """Two threads of every rank but 0 wait on a Condition; rank 0 waits
    until all of them arrived, then wakes them with notify_all."""
    cond = dsm.condition("gate")
    state = dsm.array(2, "int64")       # arrived, open
    if dsm.rank == 0:                   # nobody notifies before the barrier
        with cond:
            print("timeout: %s" % cond.wait(0.05))
    dsm.barrier()
    woke = []

    def waiter():
        with cond:
            state[0] += 1
            cond.notify_all()
            woke.append(bool(cond.wait_for(lambda: state[1] == 1, timeout=60)))

    if dsm.rank == 0:
        with cond:
            cond.wait_for(lambda: state[0] == 2 * (dsm.size - 1), timeout=60)
            state[1] = 1
            cond.notify_all()
        print("not held: " + expect(RuntimeError, cond.notify))
    else:
        threads = [threading.Thread(target=waiter) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("woke %s" % woke)
    dsm.barrier()


def event(dsm):
    """Rank 0 sets an Event every other rank waits for."""
    ev = dsm.event("go")
    print("before: set=%s wait=%s" % (ev.is_set(), ev.wait(0.05)))
    dsm.barrier()
    if dsm.rank == 0:
        ev.set()
    print("waited: %s" % ev.wait(60))
    dsm.barrier()


def semaphore(dsm):
    """A Semaphore of 1 as a mutex around a shared counter, and one of 2
    that a third acquire finds empty."""
    mutex, two = dsm.semaphore("mutex", 1), dsm.semaphore("two", 2)
    counter, k = dsm.array(1, "int64"), 50
    for _ in range(k):
        with mutex:
            counter[0] += 1
    dsm.barrier()
    print("counter %d of %d" % (counter[0], dsm.size * k))
    if dsm.rank == 0:
        print("two: %s" % [two.acquire(blocking=False) for _ in range(3)])
        two.release(2)
    dsm.barrier()


def crowd(dsm):
    """70 threads of rank 1 wait on two Conditions of one lock (35 each);
    rank 0 wakes them all with one notify_all each while holding the
    lock: 70 posts to one rank at once, more than a host mailbox's 62 slots
    (its later posts wait for takes to free slots)."""
    lock, arrived = dsm.lock("crowd"), dsm.array(1, "int64")
    conds = [dsm.condition(name, lock=lock) for name in ("crowd a", "crowd b")]
    woke = []

    def waiter(cond):
        with cond:
            arrived[0] += 1
            conds[0].notify_all()
            woke.append(cond.wait(60))

    if dsm.rank == 1:
        threads = [threading.Thread(target=waiter, args=(conds[i % 2],)) for i in range(70)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("crowd woke %d of 70: %s" % (woke.count(True), set(woke)))
    elif dsm.rank == 0:
        with conds[0]:
            conds[0].wait_for(lambda: arrived[0] == 70, timeout=60)
            conds[0].notify_all()
            conds[1].notify_all()
    dsm.barrier()


def fullbox(dsm):
    """Rank 0 posts 63 keys to rank 1: 62, then a message (a per-rank
    post) telling rank 1 so, then the 63rd.  With share=host the 62 fill
    rank 1's host mailbox, so the 63rd is not there before rank 1 takes one
    (it waits for the slot), and comes once it did."""
    host = os.environ.get("DSM_SHARE") == "host"
    post, take = ((_binding.host_post, _binding.host_take) if host else
                  (_binding.post, _binding.take))
    keys, told = [(1 << 40) + i for i in range(63)], 1 << 41
    if dsm.rank == 0:
        for k in keys[:62]:
            post(1, k)
        _binding.post(1, told)
        post(1, keys[62])
    elif dsm.rank == 1:
        _binding.take(told, 60)
        early = take(keys[62], 0)
        taken = sum(take(k, 60) for k in keys[:62])
        print("fullbox early=%s taken=%d" % (early, taken + (early or take(keys[62], 60))))
    dsm.barrier()


def pingpong(dsm):
    """Ranks 0 and 1 take turns through one Condition, argv[2] turns each:
    a rank ends its turn with a notify and waits, still holding the lock,
    so every turn but a rank's first follows a wait the other's notify
    ended.  The waits, and the messages the job sent meanwhile (the
    barriers' included)."""
    rounds = int(sys.argv[2])
    cond, turn = dsm.condition("pingpong"), dsm.array(1, "int64")
    woken = 0
    dsm.barrier()
    sent = dsm.stats()["msgs_sent"]
    if dsm.rank < 2:
        with cond:
            for _ in range(rounds):
                while turn[0] % 2 != dsm.rank:
                    woken += cond.wait(60)
                turn[0] += 1
                cond.notify()
    dsm.barrier()
    sent = dsm.stats()["msgs_sent"] - sent
    if dsm.rank < 2:
        print("turns %d woken %d msgs sent %d" % (turn[0], woken, sent))


def barrier_timeout(dsm):
    """The last rank holds back until every other rank has timed out, then
    arrives; the others' barrier, still pending, then completes."""
    timed_out = dsm.semaphore("timed out", 0)
    if dsm.rank == dsm.size - 1:
        for _ in range(dsm.size - 1):
            timed_out.acquire()
        dsm.barrier(timeout=60)
    else:
        print("waited: " + expect(libdsm.BarrierTimeoutError,
                                  lambda: dsm.barrier(timeout=0.5)))
        print("pending: " + expect(libdsm.CollectiveError, lambda: dsm.allreduce(1)))
        timed_out.release()
        dsm.barrier()
    print("after: sum=%d" % dsm.allreduce(1))


def main(scenarios):
    """Run the scenario argv[1] names, a function of scenarios (a dict)."""
    with libdsm.init() as dsm:
        scenarios[sys.argv[1]](dsm)
        sys.stdout.flush()


if __name__ == "__main__":
    main(globals())
