"""Hot swap: which model version serves, and replacing it without downtime.

The batcher calls :meth:`ModelHolder.predict`, which reads the current runtime once per
batch and returns it with the outputs, so every prediction records the version that
actually computed it. A new version is loaded and warmed up off the event loop, then
replaces the old one in a single assignment; a batch already running finishes on the old.

Loading and warming up run :func:`serving.threads.in_own_thread`, never in a pooled thread
that lives on (see there why).
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
from serving.threads import in_own_thread

log = logging.getLogger(__name__)


def load_warm(source: ModelSource, model_uri: str, device: str,
              version: str | None = None) -> ModelRuntime:
    """A version's runtime, loaded and warmed up (run it :func:`in_own_thread`)."""
    runtime = source.load(model_uri, device, version)
    runtime.warm_up()
    return runtime


class ModelSource(Protocol):
    """Where models come from (``training.registry.RegistrySource`` for MLflow): a ready
    runtime built from the version's card, so serving needs no training code."""

    def load(self, model_uri: str, device: str, version: str | None = None) -> ModelRuntime:
        """The runtime of ``version`` of the URI's model (the URI resolved once when None)."""

    def version_of(self, model_uri: str) -> str:
        """The version a URI (e.g. ``models:/name@champion``) points at now; ``NoModel``
        when it points at none."""

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
            candidate = load_warm(self.source, self.model_uri, str(current.device), version)
            if not candidate.card.same_input(current.card):
                raise InvalidInput(
                    f"version {candidate.version} preprocesses video differently from the "
                    f"version serving ({candidate.card.clip_shape} vs {current.card.clip_shape}"
                    "); restart the service to change the model's input")
            self.runtime = candidate
            if self.on_swap:
                self.on_swap(candidate)
            log.info("now serving %s version %s (was %s)", candidate.name, candidate.version,
                     current.version)
            return SwapResult(candidate.name, candidate.version, current.version, True)

    async def reload_async(self) -> SwapResult:
        """:meth:`reload` :func:`in_own_thread`, for the event loop."""
        return await in_own_thread(self.reload)

    async def poll(self, interval_s: float) -> None:
        """Reload whenever the URI's version changes; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload_async()
            except Exception:  # the registry being down must never stop serving
                log.exception("checking %s for a new version failed", self.model_uri)
