"""Start or stop a shared tracking stack: PostgreSQL, an MLflow server with accounts, TLS.

python pipelines/tracking_stack.py up --dir ./stack              # prints the URIs
eval "$(python pipelines/tracking_stack.py env --dir ./stack)"   # URI, account, PGPASSFILE
python pipelines/tracking_stack.py user add alice --dir ./stack  # a new account
python pipelines/tracking_stack.py down --dir ./stack            # stops what `up` started
"""

import sys

import bnlab  # noqa: F401  (telemetry off before mlflow is used)
from bnlab.stack.cli import main

if __name__ == "__main__":
    sys.exit(main())
