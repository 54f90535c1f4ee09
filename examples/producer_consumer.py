"""producer_consumer: rank 0 puts the numbers 1..K into a shared ring
buffer of 8 slots; every other rank takes numbers out until rank 0 says it
is done.  Two Conditions on one lock, "not full" and "not empty", make
each side sleep until the other has made room or put something in: no
polling, no sleep.  The numbers taken, summed over the consumers, must be
exactly 1..K.

    ./dsmexec.py -n 4 examples/producer_consumer.py [K]
"""
import sys

import libdsm

SLOTS = 8
HEAD, TAIL, COUNT, DONE = range(4)          # the ring's state: its first 4 words


def produce(ring, lock, not_full, not_empty, k):
    for item in range(1, k + 1):
        with lock:
            not_full.wait_for(lambda: ring[COUNT] < SLOTS)
            ring[4 + ring[TAIL]] = item
            ring[TAIL] = (ring[TAIL] + 1) % SLOTS
            ring[COUNT] += 1
            not_empty.notify()
    with lock:
        ring[DONE] = 1
        not_empty.notify_all()


def consume(ring, lock, not_full, not_empty):
    taken, total = 0, 0
    while True:
        with lock:
            not_empty.wait_for(lambda: ring[COUNT] > 0 or ring[DONE])
            if ring[COUNT] == 0:
                return taken, total
            item = int(ring[4 + ring[HEAD]])
            ring[HEAD] = (ring[HEAD] + 1) % SLOTS
            ring[COUNT] -= 1
            not_full.notify()
        taken, total = taken + 1, total + item


def main():
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with libdsm.init() as dsm:
        if dsm.size < 2:
            sys.exit("producer_consumer needs 2 ranks or more: one producer, the rest consume")
        ring = dsm.array(4 + SLOTS, "int64")
        lock = dsm.lock("ring")
        not_full = dsm.condition("ring.not_full", lock)
        not_empty = dsm.condition("ring.not_empty", lock)
        dsm.barrier()
        if dsm.rank == 0:
            produce(ring, lock, not_full, not_empty, k)
            taken, total = 0, 0
        else:
            taken, total = consume(ring, lock, not_full, not_empty)
            print("rank %d: took %d numbers" % (dsm.rank, taken))
        taken, total = dsm.allreduce([taken, total])
        if dsm.rank == 0:
            want = k * (k + 1) // 2
            print("consumers took %d numbers summing to %d, expected %d and %d: %s"
                  % (taken, total, k, want, "ok" if (taken, total) == (k, want) else "WRONG"))


if __name__ == "__main__":
    main()
