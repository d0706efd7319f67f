"""genlab: experiment framework for generative models on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
