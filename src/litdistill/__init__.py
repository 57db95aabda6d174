"""litdistill: knowledge distillation of BERT-family models with Lightning and Hydra."""

__version__ = "0.1.0"
