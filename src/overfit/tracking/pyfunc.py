"""A point's network as an MLflow pyfunc model: raw inputs in, predictions out.

``mlflow.pyfunc.load_model(uri).predict(x)`` takes the inputs as the dataset gives them (an
``(N, d)`` float array: the standardisation and the feature map are inside the network) and
returns what the run's error was computed from: the predicted values for regression, the
predicted class labels (integers, the dataset's class indices) for classification. Loading
needs ``overfit`` installed (the network's classes) and PyTorch; nothing else of the
project's: no data, no config.

This module is what MLflow pickles by reference in a LoggedModel; it imports neither
PyTorch nor the project's training code until a model is loaded.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np

NETWORK = "network"  # the artifact: torch.save({"net": nn.Module, "loss": Loss}) of a finished point
CHUNK = 8192  # inputs predicted per forward pass


class Network(mlflow.pyfunc.PythonModel):
    """The trained ``standardise → features → model`` network and its loss's reading of the scores."""

    def load_context(self, context):
        import torch

        saved = torch.load(context.artifacts[NETWORK], map_location="cpu", weights_only=False)
        self.net, self.loss = saved["net"].eval(), saved["loss"]
        self.dtype = next(iter(self.net.parameters()), torch.empty(0)).dtype

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        """``model_input``: (N, d) raw inputs (MLflow checks them against the model's signature first)."""
        import torch

        x = torch.as_tensor(np.asarray(model_input), dtype=self.dtype)
        with torch.no_grad():
            return torch.cat([self.loss.predict(self.net(chunk)) for chunk in x.split(CHUNK)]).numpy()
