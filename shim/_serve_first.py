"""Imported by `shim.cli` before anything else of the shim (whose imports take a while): in `shim serve`, a
SIGHUP from now on is recorded, and applied once the shim serves, where its default action would end the
shim before it served (`shim._hangups`)."""

import sys

from shim import _hangups

_hangups.record_if_serving(sys.argv)
