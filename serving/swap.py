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
from serving.runtime import LoadedModelLike, ModelRuntime

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """Where models come from (``training.registry.RegistrySource`` for MLflow)."""

    def load(self, model_uri: str, device: str) -> LoadedModelLike:
        """Load a model by URI onto a device."""

    def version_of(self, model_uri: str) -> str:
        """The version a URI (e.g. ``models:/name@champion``) points at now."""


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
            loaded = self.source.load(self.model_uri, str(current.device))
            candidate = ModelRuntime.from_loaded(loaded, current.device)
            if candidate.input_size != current.input_size:
                raise InvalidInput(
                    f"version {candidate.version} takes {candidate.input_size}, the service "
                    f"decodes to {current.input_size}; restart the service to change input size")
            candidate.predict(np.zeros((1, *_clip_shape(candidate)), dtype=np.uint8))  # warm-up
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


def _clip_shape(runtime: ModelRuntime) -> tuple[int, int, int, int]:
    size = runtime.input_size
    return (size.frames, size.height, size.width, 3)

