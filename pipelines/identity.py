"""Show a job's identity without training it: `bnlab identity`.

python pipelines/identity.py lr=0.05 bn=false
"""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["identity", *sys.argv[1:]]))
