"""Train stage: the config, learning-rate schedule, metrics and the training loop."""

from scifm.train.config import TrainConfig
from scifm.train.run import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
