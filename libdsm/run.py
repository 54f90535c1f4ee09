"""``python -m libdsm.run [options] machine_file prog [args...]``: dsmexec, from an install."""
import sys

from libdsm_services import main

if __name__ == "__main__":
    sys.exit(main())
