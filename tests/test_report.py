"""The report reads a store filled with synthetic runs and writes every promised file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from bnlab import metrics, tracking
from bnlab.bench import synthetic_store as synthetic
from bnlab.report import facts, statistics
from bnlab.report import figures as report
from bnlab.report.build import ReportError, build_report
from bnlab.report.comparison import shipped
from conftest import ROOT, experiment_runs, run_forked, wait_for

# The shipped study's comparison (conf/config.yaml's `compare`): BN against no BN.
BN = shipped()

ACTIVATIONS = ("relu", "sigmoid")
LRS = (0.001, 0.01, 0.05)


def fill(store: tracking.Store, seeds=(0, 1), parent: str | None = None, skip=()) -> None:
    for activation in ACTIVATIONS:
        for lr in LRS:
            for bn in (True, False):
                for seed in seeds:
                    if (activation, lr, bn) not in skip:
                        synthetic.log_run(
                            store,
                            bn=bn,
                            lr=lr,
                            activation=activation,
                            seed=seed,
                            parent_run_id=parent,
                        )


@pytest.fixture
def store(store_uri: str) -> tracking.Store:
    return tracking.Store(store_uri, "bn-trick")


def read_summary(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "summary.csv").set_index(["activation", "lr"])


def test_report_writes_every_file_with_the_right_numbers(store, store_uri, tmp_path, client):
    fill(store)
    out = tmp_path / "report"
    files = build_report(store_uri, "bn-trick", out)
    for name in (
        "comparison.png",
        "lr_sensitivity.png",
        "summary.csv",
        "summary.md",
        "claims.json",
        "index.html",
        "best_lr.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    summary = read_summary(out)
    assert len(summary) == 6
    history, _ = synthetic.curve(True, 0.05, "sigmoid", 0, 20, 50)
    expected_steps = statistics.steps_to_target(
        pd.DataFrame(
            {
                "step": [p["step"] for p in history],
                "value": [p[metrics.VAL_ACCURACY] for p in history],
            }
        ),
        0.9,
    )
    row = summary.loc[("sigmoid", 0.05)]
    assert row["steps_to_target bn"] == expected_steps
    assert pd.isna(row["steps_to_target no_bn"])
    assert row["best_val_accuracy no_bn"] == pytest.approx(0.1, abs=0.01)
    assert row["best_val_accuracy bn"] > 0.95
    assert row["best_val_accuracy diff"] == pytest.approx(
        row["best_val_accuracy bn"] - row["best_val_accuracy no_bn"]
    )
    claims = {(c["activation"], c["lr"]): c for c in json.loads((out / "claims.json").read_text())}
    assert claims[("sigmoid", 0.05)]["no_bn"]["stayed_at_chance"] is True
    assert claims[("sigmoid", 0.05)]["bn"]["learned"] is True
    assert claims[("sigmoid", 0.05)]["first_to_target"] == "bn"
    assert claims[("relu", 0.05)]["no_bn"]["diverged"] is True
    relu_small = claims[("relu", 0.001)]
    assert relu_small["first_to_target"] == "bn" and relu_small["steps_ahead"] > 0
    page = (out / "index.html").read_text()
    assert "data:image/png;base64," in page and "stayed at chance" in page
    assert "own best learning rate" in page
    # Logged to a dedicated report run, browsable in the UI.
    [report_run] = [r for r in experiment_runs(client) if r.data.tags.get("role") == "report"]
    assert report_run.info.run_id == files.run_id
    logged = {a.path for a in client.list_artifacts(files.run_id, "report")}
    assert "report/index.html" in logged and "report/claims.json" in logged


def test_report_of_one_sweep_uses_only_its_jobs_and_logs_to_the_parent(
    store, store_uri, tmp_path, client
):
    parent = store.start_run("sweep", {metrics.ROLE_TAG: "sweep"})
    fill(store, seeds=(0,), parent=parent.run_id)
    fill(store, seeds=(5,))  # another sweep's runs in the same experiment
    files = build_report(store_uri, "bn-trick", tmp_path / "r", parent_run_id=parent.run_id)
    summary = read_summary(tmp_path / "r")
    assert files.run_id == parent.run_id
    variants = pd.read_csv(tmp_path / "r" / "best_lr.csv")
    assert len(variants) == 4 and len(summary) == 6
    assert "report/index.html" in {a.path for a in client.list_artifacts(parent.run_id, "report")}


def test_other_configs_missing_cells_and_failures_do_not_crash(store, store_uri, tmp_path):
    fill(store, seeds=(0,), skip={("relu", 0.01, False)})
    synthetic.log_run(
        store,
        bn=True,
        lr=0.01,
        activation="relu",
        seed=0,
        extra_params={"optimizer._target_": "keras.optimizers.SGD"},
    )
    synthetic.log_run(store, bn=False, lr=0.001, activation="tanh", seed=0, outcome=metrics.FAILED)
    build_report(store_uri, "bn-trick", tmp_path / "r", log_artifacts=False)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "other settings left out" in page and "optimizer._target_" in page
    assert "missing from the grid" in page and "relu, lr=0.01, no BN" in page
    summary = read_summary(tmp_path / "r")
    assert ("tanh", 0.001) in summary.index


def test_the_page_names_the_bn_implementation_and_never_mixes_two(store, store_uri, tmp_path):
    fused = {"model.bn_impl": "fused"}
    for activation in ACTIVATIONS:
        for lr in LRS:
            for bn in (True, False):
                for seed in (0, 1):
                    synthetic.log_run(
                        store, bn=bn, lr=lr, activation=activation, seed=seed, extra_params=fused
                    )
    # One run of Keras's layer in a cell the fused runs cover: left out, not averaged in.
    synthetic.log_run(
        store, bn=True, lr=0.01, activation="relu", seed=0, extra_params={"model.bn_impl": "keras"}
    )
    build_report(store_uri, "bn-trick", tmp_path / "r", log_artifacts=False)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "TensorFlow&#x27;s fused kernel (model.bn_impl=fused) in 12 of 12 BN run(s)" in page
    assert "other settings left out" in page and "model.bn_impl" in page
    assert len(pd.read_csv(tmp_path / "r" / "per_seed.csv")) == 24


@pytest.mark.parametrize("out", ["/proc/x", "/proc/x/y", "FILE"])
def test_an_unwritable_out_folder_fails_with_one_line(store, store_uri, tmp_path, out) -> None:
    fill(store, seeds=(0,))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    done = run_forked(
        [
            str(ROOT / "pipelines" / "report.py"),
            "--tracking-uri",
            store_uri,
            "--out",
            out.replace("FILE", str(a_file)),
            "--no-log",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [line for line in done.stderr.splitlines() if line]
    [line] = done.stderr.splitlines()
    assert line.startswith("error: --out: cannot write the report to")
    assert a_file.read_text() == ""


@pytest.mark.slow
def test_a_report_killed_while_it_writes_leaves_every_file_whole(store, store_uri, tmp_path):
    fill(store, seeds=(0, 1))
    out = tmp_path / "report"
    command = [
        sys.executable,
        str(ROOT / "pipelines" / "report.py"),
        "--tracking-uri",
        store_uri,
        "--out",
        str(out),
        "--no-log",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    complete = {path.name: path.read_bytes() for path in out.iterdir()}
    # kill -9 at a spread of moments, from start-up to the last files being written: once
    # `written` files have been replaced (a condition, whatever the machine's load).
    total = len(complete)
    for written in sorted({0, 1, 2, total // 2, total - 2, total - 1}):
        launched = time.time_ns()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def replaced(launched: int = launched, written: int = written, process=process) -> bool:
            assert process.poll() is None, "the report ended before the kill"
            fresh = [p for p in out.iterdir() if p.exists() and p.stat().st_mtime_ns > launched]
            return len([p for p in fresh if not p.name.endswith(".partial")]) >= written

        wait_for(replaced, timeout=120, interval=0.005)
        process.kill()
        process.wait()
        names = {path.name for path in out.iterdir() if not path.name.endswith(".partial")}
        assert names == set(complete), written
        # A kill mid-write leaves at most a hidden temporary file, which the next report
        # removes; never a truncated report file.
        assert all(p.name.startswith(".") for p in out.iterdir() if p.name.endswith(".partial"))
        for name in names:
            data = (out / name).read_bytes()
            assert len(data) == len(complete[name]) or name.endswith((".html", ".png")), name
            assert data, name
        assert (out / "index.html").read_text().rstrip().endswith("</html>")
        for name in ("per_seed.csv", "summary.csv", "best_lr.csv"):
            assert len(pd.read_csv(out / name)) > 0
        json.loads((out / "claims.json").read_text())
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list(out.glob(".*.partial"))


def test_empty_and_unknown_experiments_fail_with_one_line(store, store_uri, tmp_path):
    with pytest.raises(ReportError, match="no training runs"):
        build_report(store_uri, "bn-trick", tmp_path / "r")
    with pytest.raises(ReportError, match="unknown experiment 'nope'"):
        build_report(store_uri, "nope", tmp_path / "r")
    done = run_forked(
        [
            str(ROOT / "pipelines" / "report.py"),
            "--experiment",
            "nope",
            "--tracking-uri",
            store_uri,
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown experiment 'nope' (in this store: Default, bn-trick)"
    ]
    missing = tmp_path / "absent.db"
    with pytest.raises(ReportError, match="no tracking store"):
        build_report(f"sqlite:///{missing}", "bn-trick", tmp_path / "r")
    assert not missing.exists()


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ([], "no tracking store at sqlite:///mlflow.db"),
        (["--claims"], "no tracking store at sqlite:///mlflow.db"),
        (["--experiment", "../../elsewhere"], "--experiment: must not look like a path"),
        (["--experiment", "/tmp/abs"], "--experiment: must not look like a path"),
        (["--claims", "--experiment", "../x"], "--experiment: must not look like a path"),
    ],
)
def test_a_folder_without_a_store_or_a_path_as_name_is_one_line_and_creates_nothing(
    tmp_path: Path, arguments: list[str], said: str
) -> None:
    done = run_forked(
        [str(ROOT / "pipelines" / "report.py"), *arguments],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": None},
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and said in line
    assert list(tmp_path.iterdir()) == []


def synthetic_curves() -> pd.DataFrame:
    rows = []
    for bn in (True, False):
        for seed in (0, 1, 2):
            history, outcome = synthetic.curve(bn, 0.01, "sigmoid", seed, 10, 10)
            rows += [
                {
                    "run_id": f"{bn}{seed}",
                    "activation": "sigmoid",
                    "lr": 0.01,
                    "bn": bn,
                    "seed": seed,
                    "outcome": outcome,
                    "step": p["step"],
                    "value": p[metrics.VAL_ACCURACY],
                }
                for p in history
            ]
    return pd.DataFrame(rows)


def test_plot_functions_take_frames_and_return_figures() -> None:
    curves = synthetic_curves()
    grid = report.plot_comparison_grid(curves, ["relu", "sigmoid"], [0.01, 0.05], BN, chance=0.1)
    assert isinstance(grid, Figure)
    assert len(grid.axes) == 4
    # Three seeds: a band per variant in the populated panel.
    populated = grid.axes[2]
    assert len(populated.collections) == 2
    assert {text.get_text() for text in grid.axes[0].texts} == {"BN: no runs", "no BN: no runs"}
    variants = pd.DataFrame(
        {
            "activation": ["relu"] * 4,
            "bn": [True, True, False, False],
            "lr": [0.01, 0.1, 0.01, 0.1],
            "best_val_accuracy": [0.9, 0.8, 0.7, 0.1],
        }
    )
    sensitivity = report.plot_lr_sensitivity(variants, BN)
    assert isinstance(sensitivity, Figure)
    # Ticks at exactly the learning rates swept, written as typed.
    axis = sensitivity.axes[0]
    assert list(axis.get_xticks()) == [0.01, 0.1]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["0.01", "0.1"]


def seed_frame(rows: list[tuple]) -> pd.DataFrame:
    """Per-seed rows: (activation, lr, bn, seed, best, final, steps_to_target, outcome)."""
    return pd.DataFrame(
        [
            {
                "activation": a,
                "lr": lr,
                "bn": bn,
                "seed": seed,
                "best_val_accuracy": best,
                "final_val_accuracy": final,
                "test_accuracy": final,
                "steps_to_target": steps,
                "outcome": outcome,
            }
            for a, lr, bn, seed, best, final, steps, outcome in rows
        ]
    )


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    mean, sd, ci95, count = statistics.interval([0.90, 0.92, 0.97])
    assert count == 3 and mean == pytest.approx(0.93)
    assert sd == pytest.approx(0.036055, abs=1e-5)
    # t(0.975, 2) = 4.3027: the interval is wide with three seeds, as it should be.
    assert ci95 == pytest.approx(4.302653 * 0.036055 / 3**0.5, abs=1e-5)
    single = statistics.interval([0.5, float("nan")])
    assert single[0] == 0.5 and pd.isna(single[1]) and pd.isna(single[2]) and single[3] == 1


def test_claims_count_seeds_and_follow_the_majority() -> None:
    # The plain relu network at lr=0.05 learned with seed 0 only; BN learned with all three.
    seeds = seed_frame(
        [
            ("relu", 0.05, False, 0, 0.82, 0.80, None, "finished"),
            ("relu", 0.05, False, 1, 0.10, 0.10, None, "finished"),
            ("relu", 0.05, False, 2, 0.11, 0.10, None, "diverged"),
            ("relu", 0.05, True, 0, 0.97, 0.96, 300, "finished"),
            ("relu", 0.05, True, 1, 0.96, 0.96, 350, "finished"),
            ("relu", 0.05, True, 2, 0.98, 0.97, 250, "finished"),
        ]
    )
    [fact] = facts.cell_facts(seeds, 0.9, 0.1, BN)
    assert fact["no_bn"]["stayed_at_chance_seeds"] == 2 and fact["no_bn"]["seeds"] == 3
    assert fact["no_bn"]["stayed_at_chance"] is True
    assert fact["no_bn"]["per_seed"]["0"]["best_val_accuracy"] == 0.82
    assert fact["no_bn"]["diverged_seeds"] == 1 and fact["no_bn"]["diverged"] is False
    assert fact["bn"]["learned_seeds"] == 3 and fact["bn"]["learned"] is True
    assert fact["bn_first_seeds"] == 3 and fact["first_to_target"] == "bn"
    assert fact["steps_ahead"] is None  # the plain network never got there
    sentences = facts.plain_language([fact], pd.DataFrame(columns=["activation"]), 0.9, BN)
    assert (
        "relu at lr=0.05: no BN stayed at chance in 2 of 3 seeds; "
        "BN learned in 3 of 3; BN reached 90% first in 3 of 3." in sentences
    )
    differences = statistics.paired_differences(seeds, BN).iloc[0]
    expected = statistics.interval([0.97 - 0.82, 0.96 - 0.10, 0.98 - 0.11])
    assert differences["best_val_accuracy diff"] == pytest.approx(expected[0])
    assert differences["best_val_accuracy diff ci95"] == pytest.approx(expected[2])
    assert differences["pairs"] == 3


def test_race_reports_the_median_lead_and_a_split_verdict() -> None:
    seeds = seed_frame(
        [
            ("sigmoid", 0.001, True, 0, 0.95, 0.95, 200, "finished"),
            ("sigmoid", 0.001, True, 1, 0.95, 0.95, 400, "finished"),
            ("sigmoid", 0.001, False, 0, 0.95, 0.95, 500, "finished"),
            ("sigmoid", 0.001, False, 1, 0.95, 0.95, 300, "finished"),
        ]
    )
    [fact] = facts.cell_facts(seeds, 0.9, 0.1, BN)
    assert fact["per_seed_winner"] == {"0": "bn", "1": "no_bn"}
    assert fact["first_to_target"] == "split" and fact["steps_ahead"] == 300


def test_one_seed_is_said_and_no_band_is_drawn(store, store_uri, tmp_path) -> None:
    fill(store, seeds=(0,))
    build_report(store_uri, "bn-trick", tmp_path / "r", log_artifacts=False)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "One seed per setting" in page and "no band is drawn" in page
    summary = read_summary(tmp_path / "r")
    assert summary["best_val_accuracy bn sd"].isna().all()
    assert summary["best_val_accuracy diff ci95"].isna().all()
    curves = synthetic_curves()
    one_seed = curves[curves["seed"] == 0]
    grid = report.plot_comparison_grid(one_seed, ["sigmoid"], [0.01], BN, chance=0.1)
    assert len(grid.axes[0].collections) == 0  # no band
    assert len(grid.axes[0].lines) == 3  # one line per variant, and chance


def test_three_seeds_give_faint_seed_curves_bands_and_per_seed_claims(
    store, store_uri, tmp_path
) -> None:
    fill(store, seeds=(0, 1, 2))
    build_report(store_uri, "bn-trick", tmp_path / "r", log_artifacts=False)
    summary = read_summary(tmp_path / "r")
    assert (summary["seeds bn"] == 3).all() and (summary["pairs"] == 3).all()
    assert summary["best_val_accuracy bn ci95"].notna().all()
    per_seed = pd.read_csv(tmp_path / "r" / "per_seed.csv")
    assert len(per_seed) == 36
    facts = json.loads((tmp_path / "r" / "claims.json").read_text())
    sigmoid = next(f for f in facts if f["activation"] == "sigmoid" and f["lr"] == 0.05)
    assert sigmoid["no_bn"]["stayed_at_chance_seeds"] == 3
    assert set(sigmoid["bn"]["per_seed"]) == {"0", "1", "2"}
    page = (tmp_path / "r" / "index.html").read_text()
    assert "stayed at chance in 3 of 3 seeds" in page and "±" in page
    grid = report.plot_comparison_grid(synthetic_curves(), ["sigmoid"], [0.01], BN, chance=0.1)
    # Three faint seed lines and one mean per variant, plus chance.
    assert len(grid.axes[0].lines) == 2 * (3 + 1) + 1


def test_the_report_compares_the_keys_its_runs_were_recorded_to_compare(
    store, store_uri, tmp_path
) -> None:
    # Another experiment's comparison: BN against a plain network per (width, lr) cell,
    # with its own labels, named by compare.* in the runs' config.
    compare = {
        "compare.variant": "bn",
        "compare.cell": "['model.width', 'lr']",
        "compare.labels": "['with BN', 'plain']",
    }
    for width in (16, 32):
        for lr in (0.001, 0.05):
            for bn in (True, False):
                for seed in (0, 1):
                    synthetic.log_run(
                        store,
                        bn=bn,
                        lr=lr,
                        activation="relu",
                        seed=seed,
                        extra_params={**compare, "model.width": width},
                    )
    files = build_report(store_uri, "bn-trick", tmp_path / "report", log_artifacts=False)
    summary = pd.read_csv(files.folder / "summary.csv")
    assert sorted(zip(summary["model.width"], summary["lr"], strict=True)) == [
        (16, 0.001),
        (16, 0.05),
        (32, 0.001),
        (32, 0.05),
    ]
    assert set(summary["seeds bn"]) == {2} and set(summary["seeds no_bn"]) == {2}
    page = (files.folder / "index.html").read_text()
    assert "with BN vs plain report" in page
    assert "16 at lr=0.001:" in page and "plain stayed at chance" in page
    facts = json.loads((files.folder / "claims.json").read_text())
    assert {(fact["model.width"], fact["lr"]) for fact in facts} == {
        (16.0, 0.001),
        (16.0, 0.05),
        (32.0, 0.001),
        (32.0, 0.05),
    }
    best = pd.read_csv(files.folder / "best_lr.csv")
    assert list(best.columns[:3]) == ["model.width", "bn", "lr"]


def test_a_variant_of_several_keys_has_named_sides_the_reference_last() -> None:
    from bnlab.report.comparison import from_runs, side_values

    runs = pd.DataFrame(
        {
            "compare.variant": "bn+model.norm",
            "compare.cell": "['activation', 'lr']",
            "compare.labels": "['true batch: BN', 'true layer: LayerNorm', 'false batch: none']",
            "bn": ["True", "True", "False", "True"],
            "model.norm": ["batch", "layer", "batch", "group"],
        }
    )
    compared = from_runs(runs)
    values = side_values(runs, compared)
    assert list(values) == ["true batch", "true layer", "false batch", "true group"]
    assert compared.several and compared.variant_keys == ["bn", "model.norm"]
    # Named sides in their order, an unnamed one before the reference, which stays last.
    assert compared.sides(values) == ["true batch", "true layer", "true group", "false batch"]
    assert compared.reference(values) == "false batch"
    assert [compared.label(side) for side in compared.sides(values)] == [
        "BN",
        "LayerNorm",
        "bn+model.norm=true group",
        "none",
    ]
    assert compared.title == "BN vs LayerNorm vs none"
    # A single key recorded with values other than true and false has several sides too.
    single = runs.assign(**{"compare.variant": "model.norm", "compare.labels": "[]"})
    assert from_runs(single).several and from_runs(single).sides(runs["model.norm"]) == [
        "batch",
        "group",
        "layer",
    ]
    # The BN study's variant keeps its two sides, true then false.
    assert not BN.several and BN.sides() == [True, False] and BN.reference() is False
