"""`bnlab identity`: compose a job's config from overrides and print its identity."""

from __future__ import annotations

import json
import sys

from hydra import compose, initialize_config_dir

from bnlab.config import CONF_DIR, register_configs, validate
from bnlab.config.errors import USER_ERRORS, one_line
from bnlab.job.identity import describe, identity_hash


def main(overrides: list[str]) -> int:
    """Prints `identity <hash>` and the JSON it covers; bad input exits 2 with one line."""
    if overrides and overrides[0] in ("-h", "--help"):
        print("usage: bnlab identity [OVERRIDE ...]   (the overrides of bnlab train)")
        return 0
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        config = validate(cfg, overrides)
    except USER_ERRORS as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    print(f"identity {identity_hash(config)}")
    print(json.dumps(describe(config), indent=2, sort_keys=True, default=str))
    return 0
