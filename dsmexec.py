#!/usr/bin/env python3
"""dsmexec from a checkout: run a Python program as one rank per machine-file host.

    ./dsmexec.py [options] machine_file prog [args...]

Installed, the same command is ``dsmexec`` or ``python -m libdsm.run``.
The command line lives in services/cli.py; everything else in services/.
"""
import sys

from libdsm_services import main

if __name__ == "__main__":
    sys.exit(main())
