"""Train the BN experiment's CNN once, or sweep it with -m.

python src/train.py                               # one run on the embedded MNIST subset
python src/train.py -m bn=true,false lr=0.001,0.01
"""

import hydra
from omegaconf import DictConfig

from bnlab import cli, job, metrics
from bnlab.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Returns the objective (best validation accuracy) for sweepers."""
    return job.run(cfg)[metrics.OBJECTIVE]


if __name__ == "__main__":
    cli.run(main)
