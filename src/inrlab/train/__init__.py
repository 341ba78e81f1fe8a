"""Training: the generic loop, the autoencoder trainers, checkpoints, logs, run directories."""

from inrlab.train.autoencoder import TrainAutoencoder, TrainAutoencoderSpecial
from inrlab.train.rundir import RunDir
from inrlab.train.settings import TrainSettings
from inrlab.train.trainer import Trainer

TRAINERS = {cls.__name__: cls for cls in (Trainer, TrainAutoencoder, TrainAutoencoderSpecial)}

__all__ = ["Trainer", "TrainAutoencoder", "TrainAutoencoderSpecial", "RunDir", "TrainSettings",
           "TRAINERS"]
