"""``python -m libdsm_services``: dsmexec (slurm.py reruns dsmexec this way under salloc)."""
import sys

from libdsm_services import main

sys.exit(main())
