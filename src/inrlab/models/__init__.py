"""Models: importing this package registers every model (see ``registry.MODELS``)."""

from inrlab.models import autoencoders, codecs, transformer  # noqa: F401  (registration)
from inrlab.models.autoencoders import (DalleManifoldAutoencoder, EncoderDecoder,
                                        UpscalingAutoencoder)
from inrlab.models.codecs import FactorizedPrior, LearnedCodec, ScaleHyperprior
from inrlab.models.decoders.base import ImplicitDecoder
from inrlab.models.decoders.local import LocalLatentDecoder
from inrlab.models.decoders.manifold import ImageManifoldDecoder
from inrlab.models.decoders.siren import ModulatedSirenDecoder
from inrlab.models.encoders.conv import (EncoderConv2d, EncoderConvGrid, EncoderConvMap,
                                         EncoderMLP)
from inrlab.models.encoders.dalle import DalleEncoder
from inrlab.models.encoders.resnet import ResNetEncoder, resnet18_open
from inrlab.models.layers import activation, count_parameters
from inrlab.models.registry import MODELS, register_model
from inrlab.models.transformer import TransformerAutoencoder

__all__ = [
    "MODELS", "register_model", "activation", "count_parameters", "ImplicitDecoder",
    "ImageManifoldDecoder", "LocalLatentDecoder", "ModulatedSirenDecoder", "EncoderConv2d",
    "EncoderConvGrid", "EncoderConvMap", "EncoderMLP", "DalleEncoder", "ResNetEncoder",
    "resnet18_open", "EncoderDecoder", "UpscalingAutoencoder", "DalleManifoldAutoencoder",
    "TransformerAutoencoder", "LearnedCodec", "FactorizedPrior", "ScaleHyperprior",
]
