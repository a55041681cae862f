"""Launch a Hydra multirun from one string of overrides (MLflow passes parameters as one word).

python pipelines/sweep.py "bn=true,false lr=0.001,0.01"
"""

import shlex
import subprocess
import sys
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[1] / "src" / "train.py"

if __name__ == "__main__":
    overrides = [word for argument in sys.argv[1:] for word in shlex.split(argument)]
    sys.exit(subprocess.run([sys.executable, str(TRAIN), "-m", *overrides]).returncode)
