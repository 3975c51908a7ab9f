"""Prometheus metrics of one app, on a registry of its own (several apps can share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from monitor.clock import Clock
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository

__all__ = ["CONTENT_TYPE_LATEST", "MonitoringCollector", "ServiceMetrics", "StreamCollector"]


class ServiceMetrics:
    """Request, batching, logging and model metrics."""

    def __init__(self) -> None:
        self.started = time.monotonic()
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

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time."""
        Gauge(name, doc, registry=self.registry).set_function(read)

    def set_model(self, name: str, version: str) -> None:
        """Mark the served model version."""
        self.model_version.clear()
        self.model_version.labels(name=name, version=version).set(1)

    def summary(self, route: str = "/v1/predict") -> dict[str, float | None]:
        """This process's requests since it started: count, per minute, share answered 5xx,
        and the p95 latency of ``route`` (the upper edge of its histogram bucket)."""
        total = errors = 0.0
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
                    errors += sample.value if sample.labels["status"].startswith("5") else 0
        buckets = sorted(
            (float(sample.labels["le"]), sample.value)
            for metric in self.latency.collect() for sample in metric.samples
            if sample.name.endswith("_bucket") and sample.labels["route"] == route)
        p95 = None
        if buckets and buckets[-1][1] > 0:
            p95 = next(le for le, count in buckets if count >= 0.95 * buckets[-1][1])
        minutes = max((time.monotonic() - self.started) / 60, 1e-9)
        return {"requests": total, "per_minute": total / minutes,
                "error_share": errors / total if total else None,
                "p95_s": None if p95 is None or p95 == float("inf") else p95,
                "uptime_s": minutes * 60}

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)


VERDICTS = {"drift": 1.0, "no_drift": 0.0}  # anything else (insufficient_data): -1
RISKS = {"at_risk": 1.0, "ok": 0.0, "cannot_estimate": -1.0}
RETRAIN_STATES = ("none", "pending", "running", "promoted", "rejected", "failed", "merged",
                  "cancelled")


class MonitoringCollector(Collector):
    """Monitoring gauges read from the store at scrape time, per model and version (the
    newest report of each version reported on in the last ``lookback``), so every API
    replica shows the same values, whichever process made the report."""

    def __init__(self, reports: ReportRepository, retrains: RetrainRepository, clock: Clock,
                 lookback: timedelta = timedelta(days=7)) -> None:
        self.reports, self.retrains, self.clock, self.lookback = reports, retrains, clock, lookback

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges; none while the store cannot be read (vidmon_store_read_ok says so)."""
        now = self.clock()
        ok = GaugeMetricFamily("vidmon_store_read_ok",
                               "1 when the monitoring gauges could be read from the store")
        try:
            latest = self.reports.latest_per_version(now - self.lookback)
            states = {m: (self.retrains.list(m, limit=1, triggered_only=True) or [None])[0]
                      for m in dict.fromkeys(r["model_name"] for r in latest)}
        except Exception:  # noqa: BLE001 - the store is away: the service's metrics still count
            ok.add_metric([], 0.0)
            yield ok
            return
        ok.add_metric([], 1.0)
        yield ok
        yield from _report_gauges(latest, now)
        yield _retrain_gauge(states)


def _report_gauges(latest: list[dict[str, Any]], now: Any) -> Iterator[GaugeMetricFamily]:
    labels = ["model", "version"]

    def family(name: str, doc: str, value: Callable[[dict[str, Any]], float | None]
               ) -> GaugeMetricFamily:
        metric = GaugeMetricFamily(name, doc, labels=labels)
        for report in latest:
            v = value(report)
            if v is not None:
                metric.add_metric([report["model_name"], report["model_version"]], float(v))
        return metric

    def summary(report: dict[str, Any], *path: str) -> Any:
        node: Any = report.get("summary") or {}
        for key in path:
            node = (node or {}).get(key)
        return node

    yield family("vidmon_report_verdict", "the latest window's verdict: 1 drift, 0 no drift, "
                 "-1 not decided (too few rows)", lambda r: VERDICTS.get(r["verdict"], -1.0))
    yield family("vidmon_report_embedding_p_value", "embedding drift p-value",
                 lambda r: r["embedding_p_value"])
    yield family("vidmon_report_embedding_effect", "embedding drift effect: AUC of the "
                 "kernel witness between window and reference (0.5: no difference)",
                 lambda r: summary(r, "embedding_drift", "effect"))
    yield family("vidmon_report_prior_shift_psi", "prior shift effect: population stability "
                 "index of the predicted class mix", lambda r: summary(r, "label_shift", "effect"))
    yield family("vidmon_report_drifted_column_share", "share of drifted columns",
                 lambda r: r["drift_share"])
    yield family("vidmon_report_prior_shift_p_value", "prior shift (predicted class mix) "
                 "p-value", lambda r: summary(r, "label_shift", "p_value"))
    yield family("vidmon_report_reference_accuracy", "accuracy on the reference profile",
                 lambda r: summary(r, "reference_accuracy"))
    yield family("vidmon_report_accuracy_estimable", "1 when the latest window's accuracy "
                 "could be estimated without labels, 0 when the report said 'cannot "
                 "estimate' (labels needed)", lambda r: None if r.get("estimable") is None
                 else float(bool(r["estimable"])))
    yield family("vidmon_report_labels_needed", "labels the latest window needs to bound its "
                 "accuracy within 5 points when it cannot be estimated without them (0 when "
                 "it can)", lambda r: None if r.get("estimable") is None else
                 (r.get("labels_needed") or 0) if r["estimable"] is False else 0)
    yield family("vidmon_report_accuracy_at_risk", "the latest window's second question: 1 "
                 "accuracy at risk, 0 not at risk, -1 cannot be estimated without labels",
                 lambda r: RISKS.get(r.get("accuracy_risk")))
    yield family("vidmon_report_labeled_fraction", "share of the window's predictions with "
                 "labels", lambda r: r["labeled_rows"] / r["rows"] if r["rows"] else None)
    yield family("vidmon_report_rows", "predictions in the window", lambda r: r["rows"])
    yield family("vidmon_report_age_seconds", "seconds since the latest report was made",
                 lambda r: (now - r["created_at"]).total_seconds())
    yield family("vidmon_report_window_end_seconds", "end of the latest window (Unix time)",
                 lambda r: r["window_end"].timestamp())
    accuracy = GaugeMetricFamily(
        "vidmon_report_accuracy", "the latest window's accuracy: estimated without labels or "
        "realized from them (kind), its value and 95 % interval (bound), and the method",
        labels=[*labels, "kind", "bound", "method"])
    for r in latest:
        for kind in ("estimated", "realized"):
            method = r.get("estimate_method" if kind == "estimated" else "realized_method")
            for bound, suffix in (("value", ""), ("low", "_low"), ("high", "_high")):
                value = r.get(f"{kind}_accuracy{suffix}")
                if value is not None:
                    accuracy.add_metric([r["model_name"], r["model_version"], kind, bound,
                                         method or "unknown"], float(value))
    yield accuracy
    sources = GaugeMetricFamily(
        "vidmon_report_source_drift", "each source tested in the latest window against its "
        "own recent past: 1 its inputs drifted, 0 they did not (at most serve.max_sources "
        "sources)", labels=[*labels, "source"])
    for r in latest:
        for source, result in (summary(r, "source_drift") or {}).items():
            if result.get("status") in ("drifted", "no_drift"):
                sources.add_metric([r["model_name"], r["model_version"], source],
                                   float(result["status"] == "drifted"))
    yield sources


def _retrain_gauge(states: dict[str, dict[str, Any] | None]) -> GaugeMetricFamily:
    metric = GaugeMetricFamily("vidmon_retrain_state", "the latest triggered retrain of each "
                               "model: 1 on its state", labels=["model", "state"])
    for model, decision in states.items():
        current = decision["status"] if decision else "none"
        for state in RETRAIN_STATES:
            metric.add_metric([model, state], 1.0 if state == current else 0.0)
    return metric


class StreamCollector(Collector):
    """Per-stream counters of the streams this replica pulls (at most media.max_streams
    label values): frames in, dropped, clips, reconnects, lag behind live, and whether the
    stream is live."""

    def __init__(self, stats: Callable[[], list[Any]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self.stats()
        for name, doc, kind, read in (
                ("vidmon_stream_frames_in", "frames read from the stream", "counter",
                 lambda s: s.frames_in),
                ("vidmon_stream_frames_dropped", "model frames of clips dropped while the "
                 "model was behind", "counter", lambda s: s.frames_dropped),
                ("vidmon_stream_clips", "clips classified", "counter", lambda s: s.clips),
                ("vidmon_stream_reconnects", "times the stream was reopened", "counter",
                 lambda s: s.reconnects),
                ("vidmon_stream_lag_seconds", "newest frame's arrival to its clip's answer",
                 "gauge", lambda s: s.lag_s),
                ("vidmon_stream_live", "1 while frames arrive, 0 while reconnecting or "
                 "dead", "gauge", lambda s: float(s.state == "live"))):
            family = (CounterMetricFamily(name, doc, labels=["stream"]) if kind == "counter"
                      else GaugeMetricFamily(name, doc, labels=["stream"]))
            for s in rows:
                family.add_metric([s.source_id], float(read(s)))
            yield family
