"""The ``vidmon`` MLflow flavor: a model version is its model file (in its own format) plus
its card, so any supported PyTorch video classifier lives in the registry the same way.

``log_model`` goes through ``mlflow.models.Model.log`` with this module as the flavor, which
writes ``MLmodel`` (signature, metadata) beside the files :func:`save_model` writes; loading
reads those files back with :func:`training.modelfile.load_model_folder`, never unpickling.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from monitor.card import ModelCard
from training.modelfile import LoadedNetwork, save_network

FLAVOR_NAME = "vidmon"
MODEL_ARTIFACT = "model"


def save_model(path: str, mlflow_model: Model | None = None, *, loaded: LoadedNetwork,
               card: ModelCard, **_: Any) -> None:
    """Write the model folder (MLflow calls this through ``Model.log``)."""
    save_network(loaded, card, path)
    if mlflow_model is not None:
        mlflow_model.signature = signature(card)
        mlflow_model.add_flavor(FLAVOR_NAME, format=loaded.format,
                                labels=len(card.labels), loader="training.modelfile")
        mlflow_model.save(str(Path(path) / "MLmodel"))


def signature(card: ModelCard) -> ModelSignature:
    """Normalised float clips (N, 3, T, H, W) in; logits (N, classes) out."""
    shape = (-1, 3, card.frames, card.height, card.width)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), shape, "clip")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(card.labels)), "logits")]))


def log_model(loaded: LoadedNetwork, card: ModelCard, registered_name: str | None,
              embedding_dim: int) -> Any:
    """Log (and register, when a name is given) the model in the active run."""
    metadata = {FLAVOR_NAME: {"card": card.to_dict(), "format": loaded.format,
                              "embedding_dim": embedding_dim}}
    return Model.log(artifact_path=None, name=MODEL_ARTIFACT, flavor=sys.modules[__name__],
                     registered_model_name=registered_name, metadata=metadata,
                     loaded=loaded, card=card)
