"""Putting a model version's reference profile into the store, beside its production rows."""

from __future__ import annotations


from monitor.features import FEATURE_NAMES
from monitor.profile import ReferenceProfile, entropy, probability_column
from monitor.store.records import PredictionRecord, encode_embedding
from monitor.store.repository import PredictionRepository


def reference_records(
    profile: ReferenceProfile, model_name: str, model_version: str
) -> list[PredictionRecord]:
    """One ``source='reference'`` record per profile row, true label included."""
    table = profile.table
    probabilities = table[[probability_column(c) for c in profile.label_names]].to_numpy()
    entropies = entropy(probabilities)
    features = table[list(FEATURE_NAMES)].to_numpy(dtype=float)
    videos = table["video_id"].tolist() if "video_id" in table else [None] * len(table)
    records = []
    for i, row in enumerate(table.itertuples(index=False)):
        records.append(PredictionRecord(
            model_name=model_name,
            model_version=model_version,
            predicted_label=str(row.predicted_label),
            confidence=float(row.confidence),
            entropy=float(entropies[i]),
            probabilities={c: float(p) for c, p in zip(profile.label_names, probabilities[i])},
            embedding=encode_embedding(profile.embeddings[i]),
            features=dict(zip(FEATURE_NAMES, features[i].tolist())),
            source="reference",
            true_label=str(row.true_label),
            video_id=videos[i],
        ))
    return records


def store_reference(
    repository: PredictionRepository, profile: ReferenceProfile, model_name: str,
    model_version: str,
) -> int:
    """Store the profile once per model version, even with monitors racing; returns the rows
    added (0 if already there)."""
    if repository.has_reference(model_name, model_version):
        return 0  # the common case, without building the records
    return repository.add_reference(reference_records(profile, model_name, model_version),
                                    model_name, model_version)
