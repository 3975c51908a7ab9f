"""Hot swap: which model version serves, and replacing it without downtime.

The batcher calls :meth:`ModelHolder.predict`, which reads the current runtime once per
batch and returns it with the outputs, so every prediction records the version that
actually computed it. A new version is loaded and warmed up off the event loop, then
replaces the old one in a single assignment; a batch already running finishes on the old.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from monitor.errors import InvalidInput
from monitor.profile import ReferenceProfile
from monitor.runtime import ModelRuntime

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """Where models come from (``training.registry.RegistrySource`` for MLflow): a ready
    runtime built from the version's card, so serving needs no training code."""

    def load(self, model_uri: str, device: str, version: str | None = None) -> ModelRuntime:
        """The runtime of ``version`` of the URI's model (the URI resolved once when None)."""

    def version_of(self, model_uri: str) -> str:
        """The version a URI (e.g. ``models:/name@champion``) points at now."""

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile:
        """The version's reference profile, with its fitted accuracy estimators."""


@dataclass(frozen=True)
class SwapResult:
    """What a reload did."""

    model: str
    version: str
    previous_version: str
    swapped: bool


class ModelHolder:
    """The serving runtime, replaceable while requests flow."""

    def __init__(self, runtime: ModelRuntime, source: ModelSource, model_uri: str,
                 on_swap: Callable[[ModelRuntime], None] | None = None) -> None:
        self.runtime = runtime
        self.source = source
        self.model_uri = model_uri
        self.on_swap = on_swap
        self._reload_lock = threading.Lock()

    def predict(self, clips: np.ndarray) -> tuple[np.ndarray, ...]:
        """The runtime's outputs plus, per clip, the runtime that made them."""
        runtime = self.runtime
        outputs = runtime.predict(clips)
        return (*outputs, np.array([runtime] * len(clips), dtype=object))

    def reload(self) -> SwapResult:
        """Serve whatever ``model_uri`` points at now; a no-op when it is the same version."""
        with self._reload_lock:
            current = self.runtime
            version = self.source.version_of(self.model_uri)
            if version == current.version:
                return SwapResult(current.name, version, current.version, False)
            # Loaded by the version just read: the runtime's name and weights agree.
            candidate = self.source.load(self.model_uri, str(current.device), version)
            if not candidate.card.same_input(current.card):
                raise InvalidInput(
                    f"version {candidate.version} preprocesses video differently from the "
                    f"version serving ({candidate.card.clip_shape} vs {current.card.clip_shape}"
                    "); restart the service to change the model's input")
            candidate.warm_up()
            self.runtime = candidate
            if self.on_swap:
                self.on_swap(candidate)
            log.info("now serving %s version %s (was %s)", candidate.name, candidate.version,
                     current.version)
            return SwapResult(candidate.name, candidate.version, current.version, True)

    async def poll(self, interval_s: float) -> None:
        """Reload whenever the URI's version changes; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            try:
                await loop.run_in_executor(None, self.reload)
            except Exception:  # the registry being down must never stop serving
                log.exception("checking %s for a new version failed", self.model_uri)
