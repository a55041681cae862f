"""Run the main job (the blog grid x 3 seeds, 36 jobs), then write its report.

python pipelines/study.py                       # extra Hydra overrides may follow
python pipelines/study.py train.steps=300 hydra/launcher=joblib
"""

import sys

from bnlab.pipeline import run_study

if __name__ == "__main__":
    sys.exit(run_study(sys.argv[1:]))
