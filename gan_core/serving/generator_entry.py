"""MLflow "models from code" entry: MLflow copies this file into the logged model and runs it on load.

It holds no weights and no pickle: the generator comes from the package in the model's artifacts
(see gan_core.serving.generator_model). Only gan_core.serving.generator_model.log_generator should point MLflow here.
"""

from mlflow.models import set_model

from gan_core.serving.generator_model import GeneratorModel

set_model(GeneratorModel())
