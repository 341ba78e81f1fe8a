"""inrlab: implicit neural representation autoencoders for images."""

__version__ = "0.1.0"
