"""Kept for generator models logged before gan_core was grouped by stage: their copied entry file imports
`gan_core.mlflow_model.GeneratorModel`. New code imports gan_core.serving.generator_model."""

from gan_core.serving.generator_model import GeneratorModel, decode_predictions

__all__ = ["GeneratorModel", "decode_predictions"]
