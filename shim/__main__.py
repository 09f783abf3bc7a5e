import sys

from shim.cli import main

if __name__ == "__main__":  # not when a comparison worker process imports the main module
    sys.exit(main())
