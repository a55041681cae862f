"""Record the runs that jobs kept offline: `bnlab sync`.

python pipelines/sync.py [DIR] [--tracking-uri URI]
"""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["sync", *sys.argv[1:]]))
