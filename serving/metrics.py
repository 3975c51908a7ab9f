"""Prometheus metrics of one app, on a registry of its own (several apps can share a process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]


class ServiceMetrics:
    """Request, batching, logging and model metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vidmon_requests_total", "HTTP requests", ["route", "status"],
                                registry=r)
        self.latency = Histogram(
            "vidmon_request_seconds", "request latency", ["route"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("vidmon_batch_size", "clips per forward pass", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.model_version = Gauge("vidmon_model_info", "served model", ["name", "version"],
                                   registry=r)
        self.accuracy = Gauge(
            "vidmon_report_accuracy",
            "the latest report's accuracy: estimated without labels or realized from them "
            "(kind), its value and 95 % interval (bound), and the method behind it",
            ["kind", "bound", "method"], registry=r)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time."""
        Gauge(name, doc, registry=self.registry).set_function(read)

    def set_model(self, name: str, version: str) -> None:
        """Mark the served model version."""
        self.model_version.clear()
        self.model_version.labels(name=name, version=version).set(1)

    def set_accuracy(self, report: dict | None) -> None:
        """Show the accuracies of ``report`` (a stored report row; None: none yet)."""
        self.accuracy.clear()
        for kind, method_key in (("estimated", "estimate_method"),
                                 ("realized", "realized_method")):
            if report is None or report.get(f"{kind}_accuracy") is None:
                continue
            method = report.get(method_key) or "unknown"
            for bound, suffix in (("value", ""), ("low", "_low"), ("high", "_high")):
                value = report.get(f"{kind}_accuracy{suffix}")
                if value is not None:
                    self.accuracy.labels(kind=kind, bound=bound, method=method).set(value)

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)
