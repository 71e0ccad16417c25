"""Models-from-code entry point: MLflow copies this file into every logged Fovea model and
runs it on load, so the model folder holds no pickle (MLflow would otherwise cloudpickle a
FoveaModel instance). The class itself comes from the installed fovea package."""

from mlflow.models import set_model

from fovea.tracking.pyfunc import FoveaModel

set_model(FoveaModel())
