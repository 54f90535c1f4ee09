"""The launcher's services: spawn and ssh, child processes, I/O multiplexing, network.

Nothing here imports libdsm; libdsm imports `services.wire` and `services.rank`.
"""

LAUNCHER_VERSION = (1, 0)   # major.minor of dsmexec and the rank bootstrap
