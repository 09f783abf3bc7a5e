"""`python -m bench` runs the open-loop load benchmark (bench/openloop.py)."""

import sys

from bench.openloop import main

sys.exit(main())
