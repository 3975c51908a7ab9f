"""The dashboard at ``/`` in headless Chromium (Debian's, driven by Selenium and Debian's
chromedriver; no browser download) against a seeded store and a real uvicorn server."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest

from monitor.alerts import Alerter
from monitor.job import run_report_job
from monitor.retrain_policy import RetrainDecision
from monitor.settings import MonitorSettings, ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.alerts import AlertRepository
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from serving.app import create_app
from serving.background import running_server
from tests.factories import production_records, reference_profile
from tests.needs import need_programs
from training.registry import RegistrySource
from training.tracking import ORIGIN_TAG, REFERENCE_ACCURACY_TAG

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
# Two quiet hours (no traffic, so no report) between the first window and the next two.
WINDOWS = [HOUR - timedelta(hours=4), HOUR - timedelta(hours=1), HOUR]


def _browser():
    need_programs(CHROMIUM, CHROMEDRIVER, install="apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _seed(settings: Settings) -> dict:
    """Three hours of predictions (the middle one brighter), a report per hour and a retrain
    decision tied to the model's MLflow run."""
    engine = create_store_engine(settings.database_url)
    upgrade_database(engine)
    predictions, reports = PredictionRepository(engine), ReportRepository(engine)
    records = []
    for i, end in enumerate(WINDOWS):
        batch = production_records(120, end - timedelta(minutes=50), seed=i,
                                   brightness=160.0 if i == 1 else 100.0, spacing_s=20)
        # the newest window comes with labels, so its page has a classification section,
        # and from a version 2 that took over (a promotion the charts mark)
        # the first and last windows come from two cameras: the last one's are tested
        # against their own past (the first window)
        records += [replace(r, model_name=settings.model_name, model_version="2" if i == 2 else "1",
                            true_label=r.predicted_label if i == 2 and k % 2 else None,
                            source_id=None if i == 1 else ("cam-a" if k % 2 else "cam-b"))
                    for k, r in enumerate(batch)]
    predictions.add_predictions(records)
    profile = reference_profile()
    monitor = MonitorSettings(interval_s=3600, lateness_s=0, window_minutes=60, min_rows=20)
    report_ids = [run_report_job(monitor, predictions, reports, lambda *_: profile,
                                 now=end).report_id for end in WINDOWS]
    run_id = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_model_version(
        settings.model_name, "1").run_id
    retrains = RetrainRepository(engine)
    decision = retrains.record(RetrainDecision(True, ["window x: drift verdict"], report_ids[1:2]),
                               settings.model_name, "1", WINDOWS[1])
    retrains.attach_run(decision, run_id)
    retrains.record(RetrainDecision(False, ["drift held 0 of 2 windows needed"], []),
                    settings.model_name, "1", WINDOWS[0])
    alerter = Alerter(settings, AlertRepository(engine), clock=lambda: WINDOWS[1])
    alerter.drift(reports.get(report_ids[1]), previous_verdict="no_drift")
    quiet = [run_report_job(monitor, predictions, reports, lambda *_: profile,
                            now=WINDOWS[0] + timedelta(hours=h)).status for h in (1, 2)]
    assert quiet == ["no_traffic", "no_traffic"]
    timeline = reports.timeline(model_name=settings.model_name)
    latest = reports.get(report_ids[-1])
    engine.dispose()
    # the version says how it was made and its reference accuracy, as log_version tags it
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    client.set_model_version_tag(settings.model_name, "1", ORIGIN_TAG, "trained")
    client.set_model_version_tag(settings.model_name, "1", REFERENCE_ACCURACY_TAG,
                                 str(profile.accuracy))
    return {"records": len(records), "timeline": timeline, "run_id": run_id,
            "latest": latest, "reference_accuracy": profile.accuracy}


@pytest.fixture
def dashboard(model_store: Settings, tmp_path: Path):
    settings = model_store.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'vidmon.db'}", "clip_dir": tmp_path / "clips",
        "mlflow_ui_url": "http://mlflow.example:5000",
        "serve": ServeSettings(spool_path=tmp_path / "spool.jsonl"),
        "monitor": MonitorSettings(interval_s=3600)})
    seeded = {**_seed(settings), "settings": settings}
    browser = _browser()
    try:
        with running_server(create_app(settings, RegistrySource(settings))) as url:
            yield browser, url, seeded
    finally:
        browser.quit()


def _values(browser, chart: str, series: str) -> list[float]:
    from selenium.webdriver.common.by import By

    shapes = browser.find_elements(By.CSS_SELECTOR, f"#{chart} [data-series='{series}'][data-value]")
    return [float(s.get_attribute("data-value")) for s in shapes]


def test_the_dashboard_shows_the_seeded_store_and_links_to_reports(dashboard) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser, url, seeded = dashboard
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")

    models = browser.find_element(By.CSS_SELECTOR, "#models tbody").text
    assert "v1" in models and "champion" in models and "trained" in models
    assert f"{seeded['reference_accuracy']:.3f}" in models

    # the status line: what serves, the last verdict, accuracies, open alerts, the service
    def card(name: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, f"[data-card='{name}']").text

    last = seeded["timeline"][-1]
    assert "v1" in card("serving")
    assert "No source drifted (2 of 2 tested against their own past)" in browser.find_element(
        By.ID, "drifted").text
    # the sources table: each camera's newest status and its history; the filter narrows it
    def source_rows() -> list[list[str]]:
        return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#sources tbody tr")]

    assert source_rows() == [["cam-a", "no drift", "–", "0 of 1", "–"],
                             ["cam-b", "no drift", "–", "0 of 1", "–"]]
    browser.find_element(By.ID, "source-filter").send_keys("cam-b")
    assert [r[0] for r in source_rows()] == ["cam-b"]
    assert {"drift": "drifted", "no_drift": "no drift"}[last["verdict"]] in card("inputs")
    assert {"ok": "not at risk", "at_risk": "at risk", "cannot_estimate": "cannot estimate"}[
        last["accuracy_risk"]] in card("accuracy")
    assert last["estimable"]
    assert f"{last['estimated_accuracy']:.2f}" in card("estimated accuracy")
    # coloured against the serving version's reference accuracy, which it names
    reference = seeded["latest"]["summary"]["reference_accuracy"]
    assert f"reference {reference:.2f}" in card("estimated accuracy")
    tone = browser.find_element(By.CSS_SELECTOR, "[data-card='estimated accuracy']")
    expected = ("bad" if last["estimated_accuracy"] < reference - 0.05 else
                "warn" if last["estimated_accuracy"] < reference - 0.025 else "good")
    assert expected in tone.get_attribute("class")
    assert f"{last['labeled_rows']} of {last['rows']} labeled" in card("realized accuracy")
    # seeded labels came with their predictions: no lag
    assert "labels come 0 s after the prediction (median of 60, 24 h)" in card(
        "realized accuracy")
    # input drift alone is news, not an open alert
    assert card("open alerts").splitlines()[1] == "0"
    assert "req/min" in card("service")
    alerts = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
    assert len(alerts) == 1 and "input drift" in alerts[0].text
    assert "brightness per clip (W=" in alerts[0].text and alerts[0].text.endswith("(report)")
    # the two idle hours are one quiet band, not two "insufficient data" reports
    quiet = browser.find_elements(By.CSS_SELECTOR, "#drift-chart .quiet")
    assert [q.get_attribute("data-label") for q in quiet] == ["quiet 2.0 h"]
    # the drift chart: alpha line, verdict markers, and where v2 took over
    threshold = browser.find_element(By.CSS_SELECTOR, "#drift-chart .threshold")
    assert float(threshold.get_attribute("data-value")) == pytest.approx(0.05)
    drifted = [p for p in seeded["timeline"] if p["verdict"] == "drift"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#drift-chart .verdict")) == len(drifted) > 0
    changes = browser.find_elements(By.CSS_SELECTOR, "#drift-chart .change")
    assert [c.get_attribute("data-label") for c in changes] == ["v2"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#drift-chart .tick")) == 3
    assert _values(browser, "labels-chart", "labeled share") == pytest.approx(
        [p["labeled_rows"] / p["rows"] for p in seeded["timeline"]])
    # retrain decisions: the one that did something; the rest a click away
    assert len(browser.find_elements(By.CSS_SELECTOR, "#retrains tbody tr")) == 1
    toggle = browser.find_element(By.ID, "all-retrains")
    assert "show all 2 decisions (1 did nothing)" in toggle.text
    toggle.click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#retrains tbody tr")) == 2
    toggle.click()

    timeline = seeded["timeline"]
    assert len(timeline) == 3
    assert _values(browser, "drift-chart", "embedding p-value") == pytest.approx(
        [p["embedding_p_value"] for p in timeline])
    assert _values(browser, "drift-chart", "drifted column share") == pytest.approx(
        [p["drift_share"] for p in timeline])
    assert _values(browser, "accuracy-chart", "estimated") == pytest.approx(
        [p["estimated_accuracy"] for p in timeline])
    band = browser.find_element(By.CSS_SELECTOR, "#accuracy-chart polygon.band[data-series='estimated']")
    assert [float(v) for v in band.get_attribute("data-low").split()] == pytest.approx(
        [p["estimated_accuracy_low"] for p in timeline])
    assert [float(v) for v in band.get_attribute("data-high").split()] == pytest.approx(
        [p["estimated_accuracy_high"] for p in timeline])
    assert all(p["estimated_accuracy_low"] < p["estimated_accuracy_high"] for p in timeline)
    assert "95 % band" in browser.find_element(By.ID, "accuracy-legend").text
    assert sum(_values(browser, "volume-chart", "predictions")) == seeded["records"]

    rows = browser.find_elements(By.CSS_SELECTOR, "#reports tbody tr")
    assert len(rows) == 3
    verdicts = [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows]
    assert verdicts == [p["verdict"].replace("_", " ") for p in timeline[::-1]]
    assert "drift" in verdicts
    risks = [r.find_elements(By.TAG_NAME, "td")[4].text for r in rows]
    assert risks == [p["accuracy_risk"].replace("_", " ") for p in timeline[::-1]]
    newest = timeline[-1]
    assert rows[0].find_elements(By.TAG_NAME, "td")[7].text == (
        f"{newest['estimated_accuracy']:.2f} [{newest['estimated_accuracy_low']:.2f}–"
        f"{newest['estimated_accuracy_high']:.2f}] {newest['estimate_method']}")
    if os.environ.get("VIDMON_SCREENSHOTS"):
        browser.set_window_size(1400, browser.execute_script("return document.body.scrollHeight") + 100)
        browser.save_screenshot(str(Path(os.environ["VIDMON_SCREENSHOTS"]) / "dashboard.png"))

    run_link = browser.find_element(By.CSS_SELECTOR, "#retrains tbody a")
    assert run_link.get_attribute("href").startswith("http://mlflow.example:5000/#/experiments/")
    assert run_link.get_attribute("href").endswith(f"/runs/{seeded['run_id']}")

    report_link = rows[1].find_element(By.LINK_TEXT, "report")
    expected = f"/v1/reports/{timeline[1]['id']}/html"
    assert report_link.get_attribute("href") == url + expected
    report_link.click()
    WebDriverWait(browser, 30).until(ready.url_to_be(url + expected))
    assert "drift" in browser.page_source and "evidently" in browser.page_source.lower()


def test_a_report_page_draws_every_evidently_section_in_full(dashboard) -> None:
    """No frames: each Evidently section is drawn into the page at its full height, from
    Evidently's script loaded once from the page's assets/ (served by vidmon)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, url, seeded = dashboard
    newest = seeded["timeline"][-1]
    page = f"{url}/v1/reports/{newest['id']}/html"
    browser.set_window_size(1400, 1000)
    browser.get(page)
    sections = {}
    for name, expected in [("columns_per_clip", "Drift is detected for"),
                           ("columns_per_video", "Drift is detected for"),
                           ("classification_on_labeled_rows",
                            "Classification Model Performance")]:
        root = browser.find_element(By.ID, f"root_vidmon_{name}")
        WebDriverWait(browser, 30).until(lambda _: expected in root.text)
        sections[name] = root.size["height"]
    # drawn in full: the drift table and the confusion matrices, not a 150-px box
    assert sections["columns_per_clip"] > 600 and sections["classification_on_labeled_rows"] > 800
    assert not browser.find_elements(By.TAG_NAME, "iframe")
    assert "two-sample chi-square" in browser.find_element(
        By.ID, "root_vidmon_columns_per_clip").text
    # one verdict per page: vidmon's, first; Evidently's dataset-level line is not drawn
    assert browser.find_element(By.ID, "inputs").location["y"] < \
        browser.find_element(By.ID, "root_vidmon_columns_per_clip").location["y"]
    assert "Dataset Drift is" not in browser.find_element(By.TAG_NAME, "body").text
    if os.environ.get("VIDMON_SCREENSHOTS"):
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1400, height)
        browser.save_screenshot(str(Path(os.environ["VIDMON_SCREENSHOTS"]) / "report.png"))

    import httpx

    html = httpx.get(page).text
    assert len(html.encode()) < 1_000_000  # Evidently's 3.5 MB script is not in it
    script = next(s for s in browser.find_elements(By.TAG_NAME, "script")
                  if (s.get_attribute("src") or "").endswith(".js"))
    served = httpx.get(script.get_attribute("src"))
    assert served.status_code == 200 and served.headers["content-type"].startswith(
        "text/javascript") and "immutable" in served.headers["cache-control"]
    missing = httpx.get(f"{url}/v1/reports/{newest['id']}/assets/..%2Fsettings.py")
    assert missing.status_code == 404

    # A page whose verdict is drift: said first, and nothing under it says otherwise
    # (Evidently's own line, judging the columns alone, would read "NOT detected").
    drifted = next(p for p in seeded["timeline"] if p["verdict"] == "drift")
    browser.get(f"{url}/v1/reports/{drifted['id']}/html")
    root = browser.find_element(By.ID, "root_vidmon_columns_per_clip")
    WebDriverWait(browser, 30).until(lambda _: "Drift is detected for" in root.text)
    assert browser.find_element(By.ID, "inputs").text.startswith("Inputs drifted")
    assert "brightness per clip" in browser.find_element(By.ID, "inputs").text
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "NOT detected" not in body and "Dataset Drift is" not in body
    if os.environ.get("VIDMON_SCREENSHOTS"):
        browser.set_window_size(1400, 1600)
        browser.save_screenshot(str(Path(os.environ["VIDMON_SCREENSHOTS"]) / "report-drift.png"))


def test_the_api_docs_render_offline_and_are_named_in_metrics(dashboard) -> None:
    """Swagger UI and ReDoc come from files installed with vidmon (Chromium here reaches
    nothing but 127.0.0.1), and request metrics name the documentation routes."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, url, _ = dashboard
    browser.get(url + "/docs")
    WebDriverWait(browser, 30).until(
        lambda b: "/v1/predict" in b.find_element(By.TAG_NAME, "body").text)
    assert "vidmon" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .title").text
    if os.environ.get("VIDMON_SCREENSHOTS"):
        browser.save_screenshot(str(Path(os.environ["VIDMON_SCREENSHOTS"]) / "docs.png"))
    browser.get(url + "/redoc")
    WebDriverWait(browser, 30).until(
        lambda b: "/v1/predict" in b.find_element(By.TAG_NAME, "body").text)
    assert httpx.get(url + "/openapi.json").json()["info"]["title"] == "vidmon"
    assert httpx.get(url + "/docs/assets/app.py").status_code == 404
    metrics = httpx.get(url + "/metrics").text
    for route in ("/docs", "/redoc", "/openapi.json", "/docs/assets/{name}"):
        assert f'route="{route}"' in metrics, route
    assert 'route="unmatched"' not in metrics


def _gauges(text: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_monitoring_gauges_come_from_the_store_on_every_replica(dashboard) -> None:
    """Two API processes on one store show the same monitoring gauges: the latest report
    of each model version and the latest retrain's state, read at scrape time."""
    import httpx

    _, url, seeded = dashboard
    settings = seeded["settings"]
    newest = seeded["timeline"][-1]
    with running_server(create_app(settings, RegistrySource(settings))) as other:
        scraped = [_gauges(httpx.get(u + "/metrics").text) for u in (url, other)]
    mv = (("model", settings.model_name), ("version", newest["model_version"]))
    for gauges in scraped:
        assert gauges[("vidmon_store_read_ok", ())] == 1.0
        assert gauges[("vidmon_report_embedding_p_value", mv)] == pytest.approx(
            newest["embedding_p_value"])
        assert gauges[("vidmon_report_drifted_column_share", mv)] == pytest.approx(
            newest["drift_share"])
        assert 0 <= gauges[("vidmon_report_embedding_effect", mv)] <= 1
        assert gauges[("vidmon_report_prior_shift_psi", mv)] >= 0
        assert gauges[("vidmon_report_verdict", mv)] == {"drift": 1, "no_drift": 0}.get(
            newest["verdict"], -1)
        assert gauges[("vidmon_report_labeled_fraction", mv)] == pytest.approx(
            newest["labeled_rows"] / newest["rows"])
        assert gauges[("vidmon_report_accuracy_estimable", mv)] == float(newest["estimable"])
        assert gauges[("vidmon_report_accuracy_at_risk", mv)] == {
            "at_risk": 1, "ok": 0, "cannot_estimate": -1}[newest["accuracy_risk"]]
        key = ("vidmon_report_accuracy", tuple(sorted(
            (*mv, ("kind", "estimated"), ("bound", "low"),
             ("method", newest["estimate_method"])))))
        assert gauges[key] == pytest.approx(newest["estimated_accuracy_low"])
        assert gauges[("vidmon_report_age_seconds", mv)] >= 0
        state = {labels: v for (name, labels), v in gauges.items()
                 if name == "vidmon_retrain_state"}
        assert sum(state.values()) == 1.0  # the seeded decision, still pending
        assert state[(("model", settings.model_name), ("state", "pending"))] == 1.0
    monitoring = [{k: v for k, v in g.items() if k[0].startswith(
        ("vidmon_report", "vidmon_retrain")) and k[0] != "vidmon_report_age_seconds"}
        for g in scraped]
    assert monitoring[0] == monitoring[1] and len(monitoring[0]) > 10


def test_every_series_the_alert_rules_and_grafana_read_is_exported(dashboard) -> None:
    """The rules file and the Grafana dashboard name only series /metrics really has."""
    import json
    import re

    import httpx

    _, url, _ = dashboard
    httpx.post(url + "/v1/predict")  # a request, so the latency histogram has samples
    exported = {name for name, _ in _gauges(httpx.get(url + "/metrics").text)}
    deploy = Path(__file__).resolve().parents[2] / "serving" / "deploy"
    dashboard_json = json.loads((deploy / "grafana" / "vidmon.json").read_text())
    exprs = [t["expr"] for p in dashboard_json["panels"] for t in p.get("targets", [])]
    exprs.append((deploy / "vidmon.rules.yml").read_text())
    used = {name for text in exprs for name in re.findall(r"\bvidmon_[a-z0-9_]+", text)}
    assert len(used) >= 10
    assert used <= exported, used - exported


def test_the_dashboard_reads_time_from_the_service_clock(dashboard) -> None:
    """Its windows end at the service's clock (a simulation's, here three days on), not the
    machine's: the seeded hours fall out of a 24-hour view there and stay in one here."""
    import httpx

    _, url, seeded = dashboard
    settings = seeded["settings"]
    later = lambda: HOUR + timedelta(days=3)  # noqa: E731
    with running_server(create_app(settings, RegistrySource(settings), clock=later)) as other:
        now_view, later_view = (httpx.get(u + "/v1/dashboard", params={"hours": 24}).json()
                                for u in (url, other))
    assert sum(h["predictions"] for h in now_view["volume"]) == seeded["records"]
    assert later_view["volume"] == []
