"""`shim replay`: a recording of Bank's traffic sent to a BK build, compared into a new store.

`source.py` checks the recording and filters its calls (--key, --until); `bk.py` is the BK called
(--bk, --bk-command) and its seeding (--seed); `output.py` the store written whole or not at all;
`driver.py` drives the shim's shadow machinery with each recorded call (`docs/replay.md`).
"""

# the slowest --speed: a recorded minute then takes over 16 hours; slower, a replay could never finish
MIN_SPEED = 0.001
