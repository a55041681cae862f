"""Run the main job (the blog grid x 3 seeds, 36 jobs), then write its report; or the claims suite.

python pipelines/study.py                       # extra Hydra overrides may follow
python pipelines/study.py train.steps=300 hydra/launcher=joblib
python pipelines/study.py --claims              # every claim's study, then the claims page
python pipelines/study.py --claims=no_bias,placement train.steps=300
"""

import sys

from bnlab.pipeline import run_claims, run_study

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments and arguments[0].startswith("--claims"):
        _, _, names = arguments[0].partition("=")
        sys.exit(run_claims([name for name in names.split(",") if name], arguments[1:]))
    sys.exit(run_study(arguments))
