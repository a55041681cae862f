"""Show a job's identity without training it: the hash that decides reuse, and what it covers.

python pipelines/identity.py                          # the default job
python pipelines/identity.py lr=0.05 bn=false         # any overrides of src/train.py
python pipelines/identity.py optimizer.learning_rate=0.05        # same identity as lr=0.05
"""

import sys

from bnlab.identity_cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
