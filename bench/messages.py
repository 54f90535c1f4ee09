"""Messages per fault as the number of ranks grows: rank 1 reads, then
writes, pages homed on rank 0 that rank 0 owns (read-ahead off, so one
fault is one page).  The counts must not grow with the number of ranks.

    ./dsmexec.py MACHINES bench/messages.py       (2 or more ranks)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libdsm                      # noqa: E402
import reference                   # noqa: E402

PAGES = 200


def main():
    dsm = libdsm.init(readahead=1)
    if dsm.rank == 1:
        pages = [p for p in range(dsm.nbytes // dsm.page_size) if dsm.page_home(p) == 0]
        before = dsm.stats()
        for p in pages[:PAGES]:
            dsm.mem[p * dsm.page_size]              # read fault
            dsm.mem[p * dsm.page_size] = 1          # write fault (upgrade)
        s = dsm.stats()
        faults = s["read_faults"] + s["write_faults"] - before["read_faults"] \
            - before["write_faults"]
        sent = s["msgs_sent"] - before["msgs_sent"]
        recv = s["msgs_recv"] - before["msgs_recv"]
        print("%d ranks: %d faults, %.2f messages sent and %.2f received per fault"
              % (dsm.size, faults, sent / faults, recv / faults))
        reference.emit(row="messages per fault, %d ranks" % dsm.size,
                       per_fault=(sent + recv) / faults)
    dsm.barrier()
    dsm.finalize()


if __name__ == "__main__":
    main()
