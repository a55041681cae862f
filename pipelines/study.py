"""Run the main job (the blog grid x 3 seeds, 36 jobs), then its report, or the
claims suite: `bnlab study`.

python pipelines/study.py train.steps=300 hydra/launcher=joblib
python pipelines/study.py --claims=no_bias,placement train.steps=300
"""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
