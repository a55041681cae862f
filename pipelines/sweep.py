"""Launch a Hydra multirun from one string of overrides: `bnlab sweep`.

python pipelines/sweep.py "bn=true,false lr=0.001,0.01"
"""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
