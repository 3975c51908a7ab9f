"""Agreement heads: a few cheap linear classifiers on the model's embedding.

Each head is a softmax regression fitted on its own bootstrap sample of the training
embeddings, looking at its own random half of the embedding's dimensions. On data like the
training data they agree with the model; where the embedding moves somewhere the training
data never went, each head extrapolates in its own way and they disagree with the model,
even when the model is confidently wrong (agreement-on-the-line, Baek et al., NeurIPS 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AgreementHeads:
    """K heads: input standardisation (d,), weights (K, d, C) with zeros outside each head's
    dimensions, and biases (K, C)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    biases: np.ndarray

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Each head's class probabilities: (K, n, C)."""
        x = (np.asarray(embeddings, dtype=np.float32) - self.mean) / self.scale
        logits = np.einsum("nd,kdc->knc", x, self.weights) + self.biases[:, None, :]
        logits -= logits.max(axis=2, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=2, keepdims=True)

    def agreement(self, embeddings: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Per clip, the share of heads whose class is the model's."""
        return share_agreeing(self.probabilities(embeddings), predicted)


def share_agreeing(head_probabilities: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per clip, the share of heads (probabilities (K, n, C)) whose class is ``predicted``."""
    return (head_probabilities.argmax(axis=2) == np.asarray(predicted)[None, :]).mean(axis=0)


def _softmax_regression(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias minimising cross-entropy + ``l2``·|W|²; convex, so L-BFGS from zero
    reaches the one optimum whatever the seed."""
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = F.cross_entropy(x @ w + b, y) + l2 * (w ** 2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return w.detach(), b.detach()


def fit_heads(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, *, heads: int = 5,
              share: float = 0.5, l2: float = 1e-3, seed: int = 0) -> AgreementHeads:
    """``heads`` heads on bootstrap samples of (embedding, true class), each on a random
    ``share`` of the dimensions."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(embeddings) < 2 or len(embeddings) != len(labels):
        raise ValueError("agreement heads need two or more labeled embeddings")
    rng = np.random.default_rng(seed)
    mean = embeddings.mean(axis=0)
    scale = embeddings.std(axis=0) + 1e-6
    x_all = (embeddings - mean) / scale
    d = x_all.shape[1]
    keep = max(1, int(round(share * d)))
    weights = np.zeros((heads, d, n_classes))
    biases = np.zeros((heads, n_classes))
    for k in range(heads):
        rows = rng.integers(0, len(x_all), len(x_all))
        dims = np.sort(rng.choice(d, size=keep, replace=False))
        w, b = _softmax_regression(torch.from_numpy(x_all[np.ix_(rows, dims)]),
                                   torch.from_numpy(labels[rows]), n_classes, l2)
        weights[k][dims] = w.numpy()
        biases[k] = b.numpy()
    return AgreementHeads(mean.astype(np.float32), scale.astype(np.float32),
                          weights.astype(np.float32), biases.astype(np.float32))
