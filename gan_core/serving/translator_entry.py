"""MLflow "models from code" entry for translators: MLflow copies this file into the logged model and runs it on load.

It holds no weights and no pickle: both directions come from the package in the model's artifacts
(see gan_core.serving.translator_model). Only gan_core.serving.translator_model.log_translator should point MLflow here.
"""

from mlflow.models import set_model

from gan_core.serving.translator_model import TranslatorModel

set_model(TranslatorModel())
