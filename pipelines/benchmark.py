"""Speed figures, printed side by side: `bnlab benchmark` (--help lists them)."""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
