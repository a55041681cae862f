"""Train the BN experiment's CNN once, or sweep it with -m: `bnlab train`.

python src/train.py                               # one run on the embedded MNIST subset
python src/train.py -m bn=true,false lr=0.001,0.01
"""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
