"""A data plug-in's output is checked before training: one line naming `data`, exit 2,
no run recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnlab.config.errors import DataError
from bnlab.experiment.data import Splits, check_splits
from conftest import ROOT, run_forked


def _splits(**changed: object) -> Splits:
    rng = np.random.default_rng(0)
    values: dict = {}
    for split, size in (("train", 40), ("val", 10), ("test", 10)):
        values[f"x_{split}"] = rng.random((size, 8, 8, 1), dtype=np.float32)
        values[f"y_{split}"] = np.arange(size) % 10
    values["classes"] = 10
    values.update(changed)
    return Splits(**values)


@pytest.mark.parametrize(
    ("changed", "said"),
    [
        ({"y_train": np.arange(39) % 10}, "x_train holds 40 examples but y_train 39 labels"),
        ({"y_val": np.full(10, 12)}, "y_val holds label 12, outside the classes (0 to 9)"),
        ({"y_test": np.full(10, -1)}, "y_test holds label -1"),
        ({"y_train": np.full(40, 0.5)}, "y_train must hold one whole-number label"),
        ({"x_val": np.full((10, 8, 8, 1), np.nan, np.float32)}, "x_val holds 640 NaN"),
        ({"x_test": np.full((10, 8, 8, 1), np.inf, np.float32)}, "x_test holds 640 NaN or inf"),
        ({"x_val": np.zeros((0, 8, 8, 1)), "y_val": np.zeros(0, int)}, "the val split is empty"),
        ({"x_test": np.zeros((10, 4, 4, 1), np.float32)}, "inputs differ in shape"),
        ({"x_train": [[0.0]] * 40}, "must be numpy arrays"),
    ],
)
def test_bad_splits_are_one_line_naming_data(changed: dict, said: str) -> None:
    with pytest.raises(DataError) as refused:
        check_splits(_splits(**changed))
    message = str(refused.value)
    assert message.startswith("data") and said in message and "\n" not in message


def test_good_splits_pass_and_a_builder_returning_something_else_is_named() -> None:
    good = _splits()
    assert check_splits(good) is good
    with pytest.raises(DataError, match=r"data._target_: mine.load returned tuple"):
        check_splits((1, 2), "mine.load")


PLUGIN = """
import numpy as np
from bnlab.plugins.digits import load_digits


def load_bad(
    flaw: str = "nan",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int = 200,
):
    splits = load_digits(
        val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed, limit=limit
    )
    if flaw == "nan":
        splits.x_train[0, 0, 0, 0] = np.nan
    elif flaw == "labels":
        splits.y_val[0] = 99
    elif flaw == "length":
        splits.y_test = splits.y_test[:-1]
    return splits
"""


@pytest.mark.parametrize(
    ("flaw", "said"),
    [
        ("nan", "data: x_train holds 1 NaN or infinite value(s)"),
        ("labels", "data: y_val holds label 99, outside the classes (0 to 9)"),
        ("length", "data: x_test holds"),
    ],
)
def test_a_data_plugin_with_bad_output_records_no_run(tmp_path: Path, flaw: str, said: str) -> None:
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    (folder / "bad_data.py").write_text(PLUGIN)
    (folder / "data" / "bad.yaml").write_text(
        "_target_: bad_data.load_bad\nflaw: nan\nval_fraction: 0.1\ntest_fraction: 0.1\n"
        "split_seed: 0\nlimit: 200\n"
    )
    # Refused before any run: in a fork of a preloaded interpreter (tests/forkrun.py).
    done = run_forked(
        ["-m", "bnlab", "train", "--user-dir", "mine", "data=bad"]
        + [f"data.flaw={flaw}", "train.steps=5"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert said in line
    assert "Traceback" not in done.stderr
    from mlflow import MlflowClient

    store = tmp_path / "mlflow.db"
    if store.exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{store}")
        experiments = client.search_experiments()
        assert client.search_runs([e.experiment_id for e in experiments]) == []
