"""Synthetic action videos, the R(2+1)D classifier, training and MLflow registry helpers."""
