"""Training: the generic loop and the autoencoder trainers (run files: ``inrlab.storage``)."""

from inrlab.train.autoencoder import TrainAutoencoder, TrainAutoencoderSpecial
from inrlab.train.settings import TrainSettings
from inrlab.train.trainer import Trainer

TRAINERS = {cls.__name__: cls for cls in (Trainer, TrainAutoencoder, TrainAutoencoderSpecial)}

__all__ = ["Trainer", "TrainAutoencoder", "TrainAutoencoderSpecial", "TrainSettings",
           "TRAINERS"]
