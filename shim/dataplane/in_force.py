"""The config in force of a supervised comparison plane, kept in the folder it shares with Envoy.

Envoy runs on the bootstrap the first plane wrote, and outlives the plane: a plane started again must run
on the config Envoy was built from, not on the config file as it is now (an edit not yet signalled with
SIGHUP, which would need a restart anyway: another Bank, another listener). So the supervisor keeps the
config it checked at start here before the first plane starts, every plane runs on the config kept here
(not on the file), and a plane that applies a reloaded config (SIGHUP) keeps the result here: the settings
it took from the file, and the old values of those that need a restart.

The file is a pickle, in the plane's private folder (mode 0700, `shim.dataplane.scratch`): only the
shim's own user can write it, as it can write the shim's code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: importing the config imports shim.dataplane.settings
    from shim.config import Config

CONFIG_IN_FORCE = "config-in-force.pickle"


def keep(folder: Path, config: Config) -> None:
    """Keep `config` as the one in force (a whole file renamed over the old: a plane reads either)."""
    temporary = folder / f".{CONFIG_IN_FORCE}.{os.getpid()}.tmp"
    with open(temporary, "wb") as out:
        pickle.dump(config, out)
    os.replace(temporary, folder / CONFIG_IN_FORCE)


def in_force(folder: Path) -> Config | None:
    """The config kept in `folder` (None when none is)."""
    try:
        with open(folder / CONFIG_IN_FORCE, "rb") as kept:
            config: Config = pickle.load(kept)  # the shim's own file, in its private folder
    except FileNotFoundError:
        return None
    return config
