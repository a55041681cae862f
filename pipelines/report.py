"""Write the report from the MLflow store: `bnlab report`.

python pipelines/report.py --experiment NAME --tracking-uri URI --out DIR
"""

import sys

from bnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
