"""The dashboard at ``/`` in headless Chromium (Debian's, driven by Selenium and Debian's
chromedriver; no browser download) against a seeded store and a real uvicorn server."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest

from monitor.job import run_report_job
from monitor.retrain_policy import RetrainDecision
from monitor.settings import MonitorSettings, ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine, upgrade_database
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from serving.app import create_app
from serving.background import running_server
from tests.factories import production_records, reference_profile
from training.registry import RegistrySource

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
WINDOWS = [HOUR - timedelta(hours=2), HOUR - timedelta(hours=1), HOUR]


def _browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        message = f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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
        records += [replace(r, model_name=settings.model_name) for r in batch]
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
    timeline = reports.timeline(model_name=settings.model_name)
    engine.dispose()
    return {"records": len(records), "timeline": timeline, "run_id": run_id}


@pytest.fixture
def dashboard(model_store: Settings, tmp_path: Path):
    settings = model_store.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'vidmon.db'}", "clip_dir": tmp_path / "clips",
        "mlflow_ui_url": "http://mlflow.example:5000",
        "serve": ServeSettings(spool_path=tmp_path / "spool.jsonl")})
    seeded = _seed(settings)
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
    assert "v1" in models and "champion" in models and "train" in models

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
    assert verdicts == [p["verdict"] for p in timeline[::-1]] and "drift" in verdicts
    newest = timeline[-1]
    assert rows[0].find_elements(By.TAG_NAME, "td")[6].text == (
        f"{newest['estimated_accuracy']:.2f} [{newest['estimated_accuracy_low']:.2f}–"
        f"{newest['estimated_accuracy_high']:.2f}] {newest['estimate_method']}")
    if os.environ.get("VIDMON_SCREENSHOTS"):
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
