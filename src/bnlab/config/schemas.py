"""Typed schemas of every config group: what a run is.

Model and data are plug-ins whose own schemas subclass `ModelConfig` and `DataConfig`;
the registry (`registry.schema_of`) finds the selected option's schema when the config
is validated. The fixed groups (optimizer, train, tracking) are typed while Hydra
composes. Range checks live in one place, `validation`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# The resolver that draws one sweep id per launch (registered by `registry`).
SWEEP_ID_RESOLVER = "bnlab_sweep_id"


@dataclass
class ModelConfig:
    """Base of every model option. Its `_target_` is called with the option's fields and
    with `input_shape` and `num_classes`, which the data supply, and returns a
    keras.Model. An option's range checks go in its `check`."""

    # The function that builds the model, e.g. bnlab.plugins.cnn.build_cnn.
    _target_: str = MISSING

    def check(self) -> None:
        """Raises ValueError('field: message') for a value out of range."""


@dataclass
class DataConfig:
    """Base of every data option. Its `_target_` is called with the option's fields and
    returns `bnlab.experiment.data.Splits`, which tell the model its input shape and class count."""

    # The function that loads and splits the data, e.g. bnlab.plugins.mnist.load_mnist_small.
    _target_: str = MISSING
    # Share of the training pool held out for validation curves.
    val_fraction: float = 0.1
    # Share of the pool held out for the final test (where the data have no test set).
    test_fraction: float = 0.1
    # Seed of the stratified split, fixed apart from the training seed so splits match.
    split_seed: int = 0
    # Keep only the first N training images (quick looks and tests); null keeps all.
    limit: int | None = None

    def check(self) -> None:
        """Raises ValueError('field: message') for a value out of range."""
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction: must be in (0, 0.5), got {self.val_fraction}")
        if not 0 < self.test_fraction < 0.5:
            raise ValueError(f"test_fraction: must be in (0, 0.5), got {self.test_fraction}")

    def train_images(self) -> int | None:
        """The fewest images the training split can hold before `limit`, when known
        without reading the data, so a batch larger than it is refused before any work."""
        return None


@dataclass
class OptimizerConfig:
    """Any Keras optimizer: `_target_` names its class, and the fields left null keep
    Keras's defaults. A new Keras optimizer is one YAML in conf/optimizer/."""

    # The optimizer class, e.g. keras.optimizers.Adam.
    _target_: str = "keras.optimizers.Adam"
    # Learning rate, the nuisance parameter every comparison sweeps.
    learning_rate: float = 0.001
    # The optional arguments of Keras's optimizers; null leaves an argument out.
    momentum: float | None = None
    nesterov: bool | None = None
    rho: float | None = None
    beta_1: float | None = None
    beta_2: float | None = None
    epsilon: float | None = None
    weight_decay: float | None = None
    amsgrad: bool | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None

    def check(self) -> None:
        """Raises ValueError('field: message') for a value out of range."""
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: must be a number > 0, got {self.learning_rate}")
        for name in ("momentum", "rho", "beta_1", "beta_2"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name}: must be in [0, 1), got {value}")
        for name in ("epsilon", "weight_decay", "clipnorm", "global_clipnorm"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")

    def arguments(self) -> dict[str, Any]:
        """The arguments given to `_target_`: the fields that are set."""
        return {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if value is not None and key != "_target_"
        }


@dataclass
class TrainConfig:
    # The blog's batch size.
    batch_size: int = 32
    # How the learning rate follows the batch size, with `lr` the rate at
    # `lr_reference_batch`: none (the same rate at every batch size), linear (lr x
    # batch / reference, Goyal et al. 2017) or sqrt (lr x sqrt(batch / reference), the
    # rule for Adam of Malladi et al. 2022).
    lr_scaling: str = "none"
    lr_reference_batch: int = 32
    # Length of the run in optimizer steps, the x-axis of every curve.
    steps: int = 1000
    # Validation metrics are computed every this many steps.
    eval_every: int = 50
    # Seed of weights, shuffling and dropout-free training order.
    seed: int = 0
    # Train again even if a complete run with the same identity is recorded.
    rerun: bool = False
    # Batches per compiled call; larger is faster on CPU, 1 matches the notebook.
    steps_per_execution: int = 25
    # CPU threads of the backend: 0 takes the launcher's CPUs per job (a joblib worker's
    # share of the machine, a Ray task's num_cpus, a Slurm task's cpus_per_task), or the
    # backend's default with the sequential launcher. Results do not depend on it.
    threads: int = 0
    # Also log what BN does inside the network at every evaluation (bnlab/internals.py):
    # activation percentiles, gradient norms, accuracy with batch statistics. Off by
    # default; the claims suite turns it on. It changes nothing that is trained.
    internals: bool = False
    # Also measure why BN helps, at every evaluation (bnlab/experiment/mechanism.py):
    # internal covariate shift as Santurkar et al. (2018) define it, and the loss landscape
    # along the gradient. Off by default (about nine gradient passes per evaluation); it
    # changes nothing that is trained.
    mechanism: bool = False


@dataclass
class TrackingConfig:
    # Record the job in MLflow at all.
    enabled: bool = True
    # MLflow tracking URI: a SQLite file by default, or an http(s) server.
    uri: str = "sqlite:///mlflow.db"
    # MLflow experiment that holds the runs.
    experiment: str = "bn-trick"
    # The experiment's description in the MLflow UI (Markdown), set when it is created;
    # the study's config says what it holds. Not logged with each run.
    note: str = ""
    # Save the trained Keras model as an artifact (off: models are cheap to retrain).
    log_model: bool = False
    # The launch a job belongs to. Drawn once per multirun and handed to every job in
    # its config (like ${now:}), so jobs find their sweep's parent run in the store.
    sweep_id: str = "${" + SWEEP_ID_RESOLVER + ":}"
    # A running job or sweep proves it is alive by stamping its run this often.
    heartbeat_seconds: float = 10.0
    # How long the first contact with the store may take before the command gives up
    # with one line: an unreachable server or a wrong URI fails fast, before any work.
    connect_seconds: float = 5.0
    # How long any later store call may retry a store that stopped answering (a server
    # or database restart) before the job ends with a clear error.
    deadline_seconds: float = 60.0
    # Where the MLflow UI of this store is served, for the links commands print: by
    # default the server itself, or `mlflow ui`'s http://127.0.0.1:5000 for a SQLite file.
    ui_url: str | None = None
    # Record CPU, memory, disk and network use (GPU where present) of every job as
    # system/* metrics (MLflow's names), written through the run's writer, this often.
    system_metrics: bool = True
    system_metrics_seconds: float = 5.0
    # A RUNNING run whose last stamp is older than this is dead: the next launch
    # closes it as KILLED and trains its cell again.
    stale_after_seconds: float = 60.0
    # Where a job keeps its results when the store stops taking writes (relative to
    # the folder the command runs from); the next launch from there records them.
    spool_dir: str = "unsent"


@dataclass
class ImplementationConfig:
    # The key (e.g. model.bn_impl) whose value says how the compared runs' true side ran.
    key: str = ""
    # Its value in runs recorded before the key existed.
    unset: str = ""
    # How the page names each value.
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class CompareConfig:
    # The key whose sides the report compares (a shorthand or a group key): a true/false
    # key (two sides), any other key, or several joined by + (`bn+model.norm`), each value
    # a side. Set by the study's config (conf/config.yaml for the BN study), not here.
    variant: str = MISSING
    # The two keys that make a cell of the report's grid: panel rows, then columns; each
    # side is also compared at its own best value of the second (its best learning rate).
    cell: list[str] = MISSING
    # How the page names the variant's true side, then its false side; with several
    # sides, `VALUE: LABEL` per side (`true layer: LayerNorm`), the reference side last.
    labels: list[str] = MISSING
    # A key that says how the true side was computed, named on the report page (empty: none).
    implementation: ImplementationConfig = field(default_factory=ImplementationConfig)


@dataclass
class TimingConfig:
    # A swept key whose values are timed side by side in one process
    # (`bnlab.experiment.step_timing`):
    # runs trained at other times, under other loads, cannot compare step times. Empty: the
    # claim times nothing.
    key: str = ""
    # Steps per timed burst; the variants alternate, burst by burst, for `rounds` rounds.
    steps: int = 50
    rounds: int = 7


@dataclass
class ClaimConfig:
    # Set by a claim's saved study (conf/experiment/claims/): which claim of the article
    # its runs test, in the article's words, and the rule (bnlab/claims.py) that counts it.
    id: str | None = None
    says: str = ""
    rule: str = ""
    # Where the claim comes in the suite: a study whose runs another reuses goes first.
    order: int = 0
    # A claim about step time also times its variants side by side.
    timing: TimingConfig = field(default_factory=TimingConfig)
    # Other claims' studies whose runs this claim's rule reads too (a grid cannot hold
    # every variant a rule compares, e.g. Noisy BN beside plain); they come earlier.
    uses: list[str] = field(default_factory=list)


@dataclass
class SearchConfig:
    # Filled by the Optuna sweeper for each trial, so the job can report to its study.
    study: str | None = None
    # Optuna storage URL of that study.
    storage: str | None = None
    # Trial number: the job reopens its trial through the storage by this number.
    trial: int | None = None


@dataclass
class Config:
    # Shorthands users sweep; the groups read them by interpolation (keys.SHORTHANDS).
    # A model without one of them leaves it unused.
    bn: bool = True
    lr: float = 0.001
    activation: str = "relu"
    seed: int = 0
    # Typed by the selected option's own schema when validated (registry.schema_of).
    model: Any = MISSING
    optimizer: OptimizerConfig = MISSING
    data: Any = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    # Set only for trials of an Optuna search (see conf/hparams_search).
    search: SearchConfig = field(default_factory=SearchConfig)
    # What the report compares; recorded with each run, never part of its identity.
    compare: CompareConfig = field(default_factory=CompareConfig)
    # The claim a claims-suite study tests; recorded with each run, never part of its identity.
    claim: ClaimConfig = field(default_factory=ClaimConfig)
