"""What the demo leaves behind: the per-window table, a PNG of the timeline, the Evidently
HTML reports, a JSON record, and where to look next."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from monitor.estimation import METHODS  # noqa: E402
from monitor.report_page import ASSETS, evidently_assets  # noqa: E402
from monitor.store import create_store_engine  # noqa: E402
from monitor.store.alerts import AlertRepository  # noqa: E402
from monitor.store.reports import ReportRepository  # noqa: E402
from simulations.timeline import WindowRow  # noqa: E402

if TYPE_CHECKING:
    from monitor.settings import Settings
    from simulations.demo import DemoResult

_COLUMNS = ("hour", "phase", "model", "rows", "verdict", "drift share", "emb p", "est acc",
            "real acc", "true acc", "cbpe/atc/doc/agr/err", "labeled", "retrain")
# Ports of the printed commands: the dashboard's is the service's setting; the two UIs get
# their own so all three run side by side (both default to one of the others' ports).
MLFLOW_UI_PORT = 5000
EVIDENTLY_UI_PORT = 8001


# `vidmon demo` on its defaults, measured from a clean clone on a 2-core machine with nothing
# else running: the base model's training, then the timeline (docs/demo.md).
DEMO_MINUTES_ON_2_CORES = (2, 7)


def cost_line(cores: int, others_busy: float, trains_base_model: bool) -> str:
    """What the run will cost on this machine, said before it starts."""
    train, timeline = DEMO_MINUTES_ON_2_CORES
    minutes = timeline + (train if trains_base_model else 0)
    line = (f"this machine: {cores} cores, {others_busy:.1f} of them kept busy by other "
            f"processes now; on 2 idle cores this run took about {minutes} min"
            + (f" ({train} of them training the base model, once)" if trains_base_model
               else ""))
    if cores - others_busy < 1.5:
        line += "; with under 2 cores free expect it to take longer"
    return line


def fmt_number(value: float | None, digits: int = 2) -> str:
    """A number for the table, ``-`` when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def window_table(rows: Sequence[WindowRow]) -> str:
    """The per-window table as aligned text."""
    lines = [[str(r.hour), r.phase, r.served_by, str(r.requests - r.failures),
              r.verdict or "-", fmt_number(r.drift_share), fmt_number(r.embedding_p, 3),
              fmt_number(r.estimated_accuracy), fmt_number(r.realized_accuracy),
              fmt_number(r.accuracy),
              "/".join(fmt_number(r.estimates.get(m)) for m in METHODS) if r.estimates
              else "-", str(r.labeled_rows), r.event or r.decision] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c)
              for i, c in enumerate(_COLUMNS[:-1])]
    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1]
    return "\n".join([fmt(_COLUMNS), *(fmt(line) for line in lines)])


def plot_timeline(rows: Sequence[WindowRow], alpha: float, path: Path) -> Path:
    """Drift scores and accuracies per window, with the phases, the retrains and the
    version serving marked."""
    hours = [r.hour for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    top.plot(hours, [r.embedding_p if r.embedding_p is not None else float("nan")
                     for r in rows], "o-", label="embedding drift p-value")
    top.plot(hours, [r.drift_share if r.drift_share is not None else float("nan")
                     for r in rows], "s-", label="share of drifted columns")
    top.axhline(alpha, color="grey", linestyle=":", label=f"alpha = {alpha}")
    top.scatter([r.hour for r in rows if r.verdict == "drift"],
                [1.6] * sum(r.verdict == "drift" for r in rows), marker="v", color="red",
                label="drift verdict", zorder=3)
    top.set_yscale("symlog", linthresh=0.01)
    top.set_ylim(0, 2.0)
    top.set_ylabel("drift score")
    top.legend(loc="lower left", fontsize=8)
    for label, values, style in (
            ("true accuracy (all traffic)", [r.accuracy for r in rows], "o-"),
            ("realized accuracy (labeled)", [r.realized_accuracy for r in rows], "s--"),
            ("estimated accuracy (no labels)", [r.estimated_accuracy for r in rows], "^:")):
        bottom.plot(hours, [float("nan") if v is None else v for v in values], style,
                    label=label)
    _mark_retrains(bottom, rows)
    bottom.set_ylim(0, 1.12)
    bottom.set_ylabel("accuracy")
    bottom.set_xlabel("simulated hour (one report window each)")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.legend(loc="lower left", fontsize=8, ncol=2)
    for axis in (top, bottom):
        for i, row in enumerate(rows):
            if i and row.phase != rows[i - 1].phase:
                axis.axvline(row.hour - 0.5, color="black", alpha=0.4)
                if axis is top:
                    axis.text(row.hour - 0.4, 1.25, row.phase, fontsize=8, va="top")
            if i and _newest(row) != _newest(rows[i - 1]):
                axis.axvline(row.hour - 0.5, color="green", linestyle="--", alpha=0.7)
                if axis is bottom:
                    axis.text(row.hour - 0.4, 0.32, f"{_newest(row)} serving",
                              color="green", fontsize=8)
    fig.suptitle("vidmon demo: drift scores per window (top); accuracy, retrains and the "
                 "version serving (bottom)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _newest(row: WindowRow) -> str:
    """The newest version that answered in a window (two answer the hour of a swap)."""
    return row.served_by.split(",")[-1]


def _mark_retrains(axis: plt.Axes, rows: Sequence[WindowRow]) -> None:
    """A marker at each window whose report triggered a retrain, by how it ended."""
    outcomes = {"promoted": ("*", "darkgreen"), "rejected": ("X", "red"),
                "no result": ("v", "darkorange")}
    for outcome, (marker, colour) in outcomes.items():
        hours = [r.hour for r in rows if r.decision_triggered
                 and (outcome in r.event or outcome == "no result"
                      and not any(o in r.event for o in ("promoted", "rejected")))]
        if hours:
            axis.scatter(hours, [1.07] * len(hours), marker=marker, color=colour, s=110,
                         zorder=3, label=f"retrain triggered: {outcome}")


def export_reports(rows: Sequence[WindowRow], database_url: str, folder: Path) -> list[Path]:
    """Each window's report page, named by hour and verdict, with the Evidently script and
    font the pages load from ``assets/`` (one copy for every page)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ASSETS).mkdir(exist_ok=True)
    for name, source in evidently_assets().items():
        shutil.copyfile(source, folder / ASSETS / name)
    engine = create_store_engine(database_url)
    reports = ReportRepository(engine)
    written = []
    for row in rows:
        if row.report_id and (page := reports.html(row.report_id)):
            path = folder / f"hour-{row.hour:02d}-{row.phase}-{row.verdict}.html"
            path.write_text(page)
            written.append(path)
    engine.dispose()
    return written


def alert_summary(settings: Settings) -> str:
    """One line on the alerts the run recorded and where they went."""
    engine = create_store_engine(settings.database_url)
    kinds = Counter(a["kind"] for a in AlertRepository(engine).list(limit=500))
    engine.dispose()
    counted = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none"
    where = (f"posted to {len(settings.alerts.webhook_urls)} webhook(s)"
             if settings.alerts.webhook_urls else
             "set VIDMON_ALERTS__WEBHOOK_URLS to have them posted")
    return f"alerts: {counted} ({where}; GET /v1/alerts lists them)"


def command_for(tool: str) -> str:
    """How to run ``tool`` from any shell: the script installed beside this Python (a
    virtual environment need not be on PATH), or the bare name when there is none."""
    script = Path(sys.executable).parent / tool
    return shlex.quote(str(script)) if script.is_file() else tool


def write_outputs(result: DemoResult, say: Callable[[str], None]) -> None:
    """Table and checks to ``say``; plot, reports and JSON to the output folder."""
    out = result.output
    settings = result.settings
    result.files["plot"] = plot_timeline(result.rows, settings.monitor.alpha,
                                         out / "timeline.png")
    pages = export_reports(result.rows, settings.database_url, out / "reports")
    result.files["reports"] = out / "reports"
    result.files["json"] = out / "timeline.json"
    result.files["json"].write_text(json.dumps({
        "started": result.started.isoformat(), "seconds": round(result.seconds, 1),
        "passed": result.passed, "checks": [asdict(c) for c in result.checks],
        "windows": [{**asdict(r), "accuracy": r.accuracy} for r in result.rows]}, indent=2))
    say("")
    say(window_table(result.rows))
    say("")
    for check in result.checks:
        say(f"[{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    say("")
    say(alert_summary(settings))
    say(f"finished in {result.seconds / 60:.1f} min. Where to look:")
    say(f"  timeline plot      {out / 'timeline.png'}")
    say(f"  Evidently reports  {out / 'reports'}/ ({len(pages)} pages, one per window)")
    say(f"  table as JSON      {out / 'timeline.json'}")
    say(f"  retrain log        {out / 'retrain.log'}")
    say("")
    say("Each command below runs as printed, in a terminal of its own:")
    for line in ui_commands(result):
        say(line)


def ui_commands(result: DemoResult) -> list[str]:
    """The dashboard, MLflow UI and Evidently UI on the demo's stores: for each, a line
    naming it and where to open it, then the command alone on its line."""
    out, settings, q = result.output, result.settings, shlex.quote
    lines = [f"  dashboard and API: open http://127.0.0.1:{settings.serve.port}/ "
             "(API docs at /docs) after",
             f"    cd {q(str(out.resolve()))} && {command_for('vidmon')} serve "
             f"--port {settings.serve.port}",
             f"  MLflow UI: open http://127.0.0.1:{MLFLOW_UI_PORT}/ after",
             f"    {command_for('mlflow')} ui --backend-store-uri "
             f"{q(settings.mlflow_tracking_uri)} --port {MLFLOW_UI_PORT}"]
    if settings.evidently_workspace:
        lines += [f"  Evidently UI: open http://127.0.0.1:{EVIDENTLY_UI_PORT}/ after",
                  f"    {command_for('evidently')} ui --workspace "
                  f"{q(str(settings.evidently_workspace))} --port {EVIDENTLY_UI_PORT}"]
    return lines


def progress_line(row: WindowRow) -> str:
    """The line printed as each simulated hour ends."""
    return (f"hour {row.hour:>2} {row.phase:<16} {row.served_by:<6} "
            f"{row.requests - row.failures:>4} answered, accuracy {fmt_number(row.accuracy)} | "
            f"{row.verdict or 'no report':<8} emb p {fmt_number(row.embedding_p, 3)} "
            f"estimated {fmt_number(row.estimated_accuracy)}"
            f"{' [%.2f, %.2f]' % row.estimated_interval if row.estimated_interval else ''} "
            f"realized {fmt_number(row.realized_accuracy)} ({row.labeled_rows} labels) | "
            f"{row.event or row.decision}")
