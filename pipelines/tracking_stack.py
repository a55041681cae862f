"""Start or stop a shared tracking stack: `bnlab stack` (up, down, env, user).

python pipelines/tracking_stack.py up --dir ./stack
"""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["stack", *sys.argv[1:]]))
