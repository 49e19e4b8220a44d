"""Kept for translator models logged before gan_core was grouped by stage: their copied entry file imports
`gan_core.mlflow_translator.TranslatorModel`. New code imports gan_core.serving.translator_model."""

from gan_core.serving.translator_model import TranslatorModel

__all__ = ["TranslatorModel"]
