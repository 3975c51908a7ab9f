"""A report's HTML page: vidmon's summary, then each Evidently report drawn in place.

Evidently's own HTML inlines its 3.5 MB script and font in every report and, embedded as
an iframe, needs a script to size each frame. Here every page draws its Evidently
dashboards into plain ``<div>`` elements (full height, no frames) and loads Evidently's
script and font once, from ``assets/`` beside the page: ``GET /v1/reports/{id}/assets/..``
under the API, a ``reports/assets`` folder in the demo's output.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.report import ReportSummary

ASSETS = "assets"  # the folder, relative to a page, that holds Evidently's script and font
FONT = "material-ui-icons.woff2"
_ID = re.compile(r"[^0-9a-zA-Z_]")


def evidently_assets() -> dict[str, Path]:
    """The files a page loads from ``assets/``, by name, from the installed Evidently (the
    script's name carries Evidently's version, so a browser may cache it for good)."""
    import evidently
    from evidently.legacy.utils.dashboard import STATIC_PATH

    static = Path(STATIC_PATH)
    return {script_name(evidently.__version__): static / "index.js", FONT: static / FONT}


def script_name(version: str) -> str:
    """File name of Evidently's script for one Evidently version."""
    return f"evidently-{version}.js"


def _dashboard(name: str, snapshot: Any) -> tuple[str, str]:
    """The ``<div>`` a snapshot is drawn into and the script with its data that draws it;
    the same widgets and extra graphs Evidently's own ``get_html_str`` renders."""
    from evidently.legacy.model.dashboard import DashboardInfo
    from evidently.legacy.model.widget import AdditionalGraphInfo, BaseWidgetInfo
    from evidently.legacy.renderers.base_renderer import DetailsInfo
    from evidently.legacy.renderers.html_widgets import group_widget
    from evidently.legacy.utils.numpy_encoder import NumpyEncoder

    # Evidently's dataset-level line ("Dataset Drift is NOT detected") judges the columns
    # alone; the page's verdict, at its top, also weighs embeddings and class mix, so that
    # line is left out: a page says one verdict.
    own = [w for w in snapshot._widgets if not _dataset_verdict(w)]  # noqa: SLF001
    widgets = [group_widget(title="", widgets=own), *snapshot._tests_widgets]  # noqa: SLF001
    graphs: dict[str, Any] = {}
    for widget in widgets:
        for graph in widget.get_additional_graphs():
            info = graph.params if isinstance(graph, AdditionalGraphInfo) else graph
            item = DetailsInfo(title="", info=info, id=graph.id)
            graphs[str(item.id)] = (item.info.dict() if isinstance(item.info, BaseWidgetInfo)
                                    else item.info)
    ident = "vidmon_" + _ID.sub("_", name)
    info = json.dumps(DashboardInfo(name="Report", widgets=widgets).dict(), cls=NumpyEncoder)
    data = json.dumps(graphs, cls=NumpyEncoder)
    # JSON inside <script>: "</" would end the element early.
    info, data = info.replace("</", "<\\/"), data.replace("</", "<\\/")
    script = (f"window.drawDashboard({info}, new Map(Object.entries({data})), "
              f"'root_{ident}');")
    return f"<div id='root_{ident}' class='evidently'></div>", script


def _dataset_verdict(widget: Any) -> bool:
    """Whether an Evidently widget is its dataset-level drift verdict."""
    counters = (widget.params or {}).get("counters") if widget.type == "counter" else None
    return bool(counters) and any("Dataset Drift" in str(c.get("value", "")) or
                                  "Dataset Drift" in str(c.get("label", ""))
                                  for c in counters)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _interval(value: float | None, low: float | None, high: float | None,
              method: str | None) -> str | None:
    """``0.912 [0.88, 0.94] (combined)``, or None without a value."""
    if value is None:
        return None
    return f"{value:.3f} [{low:.3f}, {high:.3f}] ({method})"


_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    ".verdict{display:flex;gap:1em;margin:1em 0}"
    ".answer{border-radius:6px;padding:0.8em 1.2em;flex:1;border:1px solid #ccc}"
    ".answer h2{margin:0 0 0.3em 0;font-size:1.2em}.answer p{margin:0.2em 0}"
    ".bad{background:#fde2e1;border-color:#c0392b}.warn{background:#fff4d6;"
    "border-color:#d4a017}.good{background:#e3f4e4;border-color:#2e8b57}"
    ".note{color:#555;font-size:0.9em}"
    f"@font-face{{font-family:'Material Icons';font-style:normal;font-weight:400;"
    f"src:url({ASSETS}/{FONT}) format('woff2')}}"
    ".material-icons{font-family:'Material Icons';font-weight:normal;font-style:normal;"
    "font-size:24px;line-height:1;display:inline-block;white-space:nowrap;direction:ltr}"
    ".evidently{min-height:100px}")

_INPUTS = {"drift": ("bad", "Inputs drifted"), "no_drift": ("good", "Inputs: no drift"),
           "insufficient_data": ("warn", "Inputs: too few rows to test")}
_ACCURACY = {"at_risk": ("bad", "Accuracy at risk"), "ok": ("good", "Accuracy: not at risk"),
             "cannot_estimate": ("warn", "Accuracy cannot be estimated without labels")}
_SNAPSHOT_TITLES = {
    "columns per clip": "Per-column detail, one row per clip (Evidently, run with vidmon's "
                        "tests and levels)",
    "columns per video": "Per-column detail, one row per video (Evidently, run with vidmon's "
                         "tests and levels)",
    "classification on labeled rows": "Classification quality on the window's labeled rows "
                                      "(Evidently)"}


def _verdict_box(s: "ReportSummary") -> str:
    """The page's verdict, first: did the inputs drift, and is accuracy at risk."""
    kind, title = _INPUTS.get(s.verdict, ("warn", s.verdict))
    reasons = "".join(f"<p>{_fmt(r)}</p>" for r in s.reasons) or "<p>no test found drift</p>"
    risk_kind, risk_title = _ACCURACY.get(s.accuracy_risk, ("warn", s.accuracy_risk))
    labels = (f"<p><b>Label {s.labels_needed} of this window's predictions</b> (the "
              "labeling queue picks them) to bound its accuracy within 5 points.</p>"
              if s.accuracy_risk == "cannot_estimate" and s.labels_needed else "")
    return (f"<div class='verdict'><div class='answer {kind}' id='inputs'><h2>{title}</h2>"
            f"{reasons}</div><div class='answer {risk_kind}' id='accuracy'>"
            f"<h2>{risk_title}</h2><p>{_fmt(s.risk_reason)}</p>{labels}</div></div>")


def _test(result: dict[str, Any] | None) -> str:
    """A test's p-value against its level and its effect against its minimum."""
    if not result:
        return "not run"
    text = f"p={_fmt(result.get('p_value'))} (level {_fmt(result.get('alpha'))})"
    if result.get("effect_method"):
        text += (f", {result['effect_method']}={_fmt(result.get('effect'))} "
                 f"(minimum {_fmt(result.get('min_effect'))})")
    return text + (": drift" if result.get("drifted") else "")


def render_html(summary: "ReportSummary", snapshots: dict[str, Any]) -> str:
    """vidmon's summary page with the Evidently ``snapshots`` drawn below it."""
    import evidently

    s = summary
    rows = "".join(
        f"<tr><th>{_fmt(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in [
            ("model", f"{s.model_name} v{s.model_version}"),
            ("window", f"{s.window_start.isoformat()} – {s.window_end.isoformat()}"),
            ("rows / labeled / reference", f"{s.rows} / {s.labeled_rows} / {s.reference_rows}"),
            ("share of drifted columns", s.drift_share),
            ("embedding drift within classes",
             _test((s.embedding_drift or {}).get("within_classes"))),
            ("embedding drift pooled", _test((s.embedding_drift or {}).get("pooled"))),
            ("prior shift (predicted classes)", _test(s.label_shift)),
            ("estimated accuracy", _interval(s.estimated_accuracy, s.estimated_accuracy_low,
                                             s.estimated_accuracy_high, s.estimate_method)),
            ("realized accuracy", _interval(s.realized_accuracy, s.realized_accuracy_low,
                                            s.realized_accuracy_high, s.realized_method)),
            ("label-free estimate", "given" if s.estimable else
             f"cannot estimate: {s.estimate_reason}" if s.estimable is False else None),
            ("window vs reference: domain classifier AUC / effective reference clips",
             None if s.domain_auc is None else
             f"{s.domain_auc:.3f} / {s.effective_reference_rows:.0f}"),
            ("macro F1", s.macro_f1),
            ("reference accuracy", s.reference_accuracy)])
    classes = "".join(
        f"<tr><td>{_fmt(c)}</td><td>{_fmt(s.class_frequencies.get('reference', {}).get(c))}</td>"
        f"<td>{_fmt(s.class_frequencies.get('current', {}).get(c))}</td>"
        f"<td>{_fmt(s.per_class_drift.get(c, {}).get('p_value'))}</td>"
        f"<td>{_fmt(s.per_class_drift.get(c, {}).get('effect'))}</td>"
        f"<td>{'yes' if s.per_class_drift.get(c, {}).get('drifted') else ''}</td></tr>"
        for c in s.class_frequencies.get("reference", {}))
    columns = "".join(
        f"<tr><td>{_fmt(c)}</td><td>{_fmt(v.get('unit', 'clip'))}</td>"
        f"<td>{_fmt(v['method'])}</td><td>{_fmt(v['score'])}</td>"
        f"<td>{_fmt(v['threshold'])}</td><td>{_fmt(v.get('effect_method'))}</td>"
        f"<td>{_fmt(v.get('effect'))}</td><td>{_fmt(v.get('min_effect'))}</td>"
        f"<td>{ {True: 'yes', False: '', None: 'not tested'}[v['drifted']]}</td></tr>"
        for c, v in s.column_drift.items())
    estimates = "".join(
        f"<tr><td>{_fmt(m)}</td><td>{_fmt(e['value'])}</td><td>{_fmt(e['low'])} – "
        f"{_fmt(e['high'])}</td></tr>" for m, e in s.accuracy_estimates.items())
    drawn = [(name, *_dashboard(name, snapshot)) for name, snapshot in snapshots.items()]
    sections = "".join(f"<h2>{_fmt(_SNAPSHOT_TITLES.get(name, f'Evidently: {name}'))}</h2>"
                       f"{div}" for name, div, _ in drawn)
    scripts = ""
    if drawn:
        scripts = (f"<script>var global = globalThis</script>"
                   f"<script src='{ASSETS}/{script_name(evidently.__version__)}'></script>"
                   f"<script>{''.join(script for _, _, script in drawn)}</script>")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>vidmon report: {_fmt(s.model_name)} v{_fmt(s.model_version)}, "
        f"{_fmt(s.window_end.isoformat())}</title><style>{_STYLE}</style></head><body>"
        f"<h1>vidmon monitoring report</h1>{_verdict_box(s)}<table>{rows}</table>"
        "<h2>Columns: drift needs p below its level and an effect of at least its minimum</h2>"
        "<p class='note'>File columns (frame count, duration, fps, size) are compared once "
        "per video; a column with a few values on the reference is compared as categories "
        "(PSI).</p>"
        "<table><tr><th>column</th><th>per</th><th>test</th><th>p-value</th><th>level</th>"
        "<th>effect</th>"
        f"<th>value</th><th>minimum</th><th>drifted</th></tr>{columns}</table>"
        "<h2>Accuracy without labels: every estimator, 95 % interval</h2>"
        f"<table><tr><th>method</th><th>estimate</th><th>interval</th></tr>{estimates}</table>"
        "<h2>Classes: share of predictions and embedding drift within each</h2>"
        "<table><tr><th>class</th><th>reference</th><th>window</th><th>p-value</th><th>AUC</th>"
        f"<th>drifted</th></tr>{classes}</table>{sections}{scripts}</body></html>")
