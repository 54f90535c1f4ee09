"""The smallest DSM program: join the job and leave it (bench/launch.py)."""
import libdsm

libdsm.init().finalize()
