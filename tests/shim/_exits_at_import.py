"""An adapters module that reads options of its own at import and exits (argparse's `sys.exit(2)`): under
the shim's command line its required option is missing."""

import argparse

_parser = argparse.ArgumentParser(prog="rate-adapters")
_parser.add_argument("--rate-table", required=True)
ARGS = _parser.parse_args([])
ADAPTERS: dict[str, object] = {}
