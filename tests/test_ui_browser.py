"""The MLflow UI in a real browser: what a person sees after a pipeline run.

A short pipeline (every family, tiny training) fills a fresh store, `forecast ui` serves it on
127.0.0.1, and headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium with
both paths given, so nothing is downloaded) opens the experiment's runs page. It expands the
pipeline run to its children, adds the `val_mse` column, then selects the children and compares
them. Screenshots go to the test's tmp_path (and on failure, the page source too).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mlflow import MlflowClient
from servers import CHROMEDRIVER, CHROMIUM, chromium_driver, start_forecast_ui, stop
from test_pipeline import FAMILIES, make_config

from forecasting.pipeline import run_pipeline

pytestmark = [pytest.mark.server, pytest.mark.slow]

WAIT = 90  # seconds for the UI to render on a busy two-core runner


def _browser_or_skip() -> None:
    """Chromium, its driver and Selenium must be here: a failure on CI (which installs them), a
    skip on a developer's machine."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium (the dev extra)")
    if not missing:
        return
    message = (
        f"browser test needs {', '.join(missing)}: "
        "`apt-get install chromium chromium-driver` and `pip install -e .[dev]`"
    )
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def _chromium() -> Iterator:
    """Headless Debian Chromium with a fresh profile, driven through Debian's chromedriver."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    driver = chromium_driver(profile, "--window-size=3400,1400")  # all twelve runs side by side
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_ui_shows_every_family_and_its_validation_score(tmp_path, monkeypatch):
    _browser_or_skip()  # before the pipeline: a missing browser should not cost a training run

    store = tmp_path / "store"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = make_config(tmp_path, "ui-browser")
    result = run_pipeline(cfg)
    children = {r.name: r for r in result.results}
    assert sorted(children) == sorted(FAMILIES)
    assert all(r.status == "FINISHED" for r in children.values()), {r.name: r.error for r in result.results}
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(result.parent_run_id).info.experiment_id
    val_mse = {name: client.get_run(r.run_id).data.metrics["val_mse"] for name, r in children.items()}
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    proc, base = start_forecast_ui(tracking_uri, tmp_path / "ui.log")
    try:
        with _chromium() as driver:
            _look_at_the_runs(
                driver,
                base,
                experiment_id,
                result.parent_run_id,
                children,
                val_mse,
                tmp_path,
                result.prepared.data.dataset_hash,
            )
    finally:
        stop(proc)


def _look_at_the_runs(
    driver, base, experiment_id, parent_run_id, children, val_mse, tmp_path, dataset_hash
) -> None:
    """What a person does: runs table -> expand the pipeline run -> add val_mse -> compare children."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)

    def until(what: str, condition):
        try:
            return wait.until(lambda d: condition(d))
        except TimeoutException:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            (tmp_path / "failure.html").write_text(driver.page_source)
            pytest.fail(f"the UI never showed {what} (screenshot and page in {tmp_path})", pytrace=False)

    def run_names(d) -> list[str]:
        cells = d.find_elements(By.CSS_SELECTOR, "[role=gridcell][col-id='attributes.`Run Name`'] a")
        return [c.text for c in cells]

    def row(run_id: str) -> str:
        return f"[role=row][row-id='{run_id}']"

    # The runs table of the experiment ("Model training" view; MLflow 3 opens GenAI otherwise).
    driver.get(f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    # The pipeline run is named for what it is: "pipeline <experiment> <data hash> <time>".
    title = f"pipeline ui-browser {dataset_hash[:8]} "
    until("the pipeline run in the runs table", lambda d: any(n.startswith(title) for n in run_names(d)))
    for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label=Close]"):
        close.click()  # the assistant side panel, when it opens
    # Child runs are nested under the pipeline run: expand it, as a person would.
    names = run_names(driver)
    assert not set(FAMILIES) & set(names), f"children shown before expanding: {names}"
    driver.find_element(
        By.CSS_SELECTOR, f"{row(parent_run_id)} button[data-component-id*=runnamecellrenderer]"
    ).click()
    until("every family's child run", lambda d: set(FAMILIES) <= set(run_names(d)))

    # Metric columns are hidden by default: add val_mse through "Columns".
    next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Columns").click()
    box = "input[placeholder='Search columns']"
    until("the column search box", lambda d: d.find_elements(By.CSS_SELECTOR, box))[0].send_keys("val_mse")
    leaf = (
        "//*[@data-testid='column-selector-tree']"
        "//span[contains(@class, 'tree-title')][normalize-space(.)='val_mse']"
    )
    until("val_mse in the column selector", lambda d: d.find_elements(By.XPATH, leaf))[0].click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    until(
        "the val_mse column",
        lambda d: "val_mse" in [h.text for h in d.find_elements(By.CSS_SELECTOR, "[role=columnheader]")],
    )
    cell = "[col-id='metrics.`val_mse`']"

    def val_mse_cells(d) -> dict[str, str] | None:
        shown = {}
        for name, r in children.items():
            cells = d.find_elements(By.CSS_SELECTOR, f"{row(r.run_id)} {cell}")
            if not cells or cells[0].text in {"", "-"}:
                return None
            shown[name] = cells[0].text
        return shown

    shown = until("a val_mse value in every child row", val_mse_cells)
    for name, text in shown.items():
        assert float(text) == pytest.approx(val_mse[name], rel=1e-6), name
    driver.save_screenshot(str(tmp_path / "runs-table.png"))

    # Select the children and compare them.
    for r in children.values():
        driver.find_element(By.CSS_SELECTOR, f"{row(r.run_id)} input.ag-checkbox-input").click()
    compare = until(
        "the Compare button",
        lambda d: [b for b in d.find_elements(By.TAG_NAME, "button") if b.text == "Compare"],
    )
    compare[0].click()
    heading = f"Comparing {len(FAMILIES)} Runs from 1 Experiment"
    until(f"'{heading}'", lambda d: heading in d.find_element(By.TAG_NAME, "body").text)
    assert all(r.run_id in driver.current_url for r in children.values()), driver.current_url
    for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label=Close]"):
        close.click()

    # "Run details": one column per family, in the order of the Metrics table's columns.
    details = (
        "//table[contains(@class, 'mlflow-compare-run-table')]//tr[th[normalize-space(.)='Run Name:']]/td"
    )
    columns = until(
        "the run names in Run details", lambda d: [c.text for c in d.find_elements(By.XPATH, details)]
    )
    assert sorted(columns) == sorted(FAMILIES)

    # Fold the long Parameters list so that Run details sits right above Metrics.
    section = "//div[contains(@class, 'collapse-header')][normalize-space(.)='{}']"
    driver.find_element(By.XPATH, section.format("Parameters")).click()
    run_details = driver.find_element(By.XPATH, section.format("Run details"))
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", run_details)

    # "Metrics" scrolls inside itself (names on the left, values on the right): scroll to val_mse.
    metrics = driver.find_element(By.XPATH, section.format("Metrics") + "/..")
    names, values = metrics.find_elements(By.CSS_SELECTOR, ".ReactVirtualized__Grid")
    label = "//a[@title='Plot chart'][normalize-space(.)='val_mse']"
    # Scroll both halves together (in headless Chromium the names can lag behind the values).
    scroll = "arguments[0].scrollTop = arguments[2]; arguments[1].scrollTop = arguments[2]"

    def val_mse_row(d):
        found = d.find_elements(By.XPATH, label)
        if not found:
            d.execute_script(scroll, values, names, values.get_property("scrollTop") + 135)
            return None
        box, at = names.rect, found[0].rect
        in_view = box["y"] <= at["y"] and at["y"] + at["height"] <= box["y"] + box["height"]
        if not in_view:
            top = float(found[0].find_element(By.XPATH, "..").value_of_css_property("top")[:-2])
            d.execute_script(scroll, values, names, top)
            return None  # it was rendered just outside the visible rows; now it is in view
        top = found[0].find_element(By.XPATH, "..").value_of_css_property("top")
        cells = values.find_elements(By.XPATH, f".//div[contains(@style, 'top: {top};')]")
        if len(cells) < len(FAMILIES):
            return None
        cells.sort(key=lambda c: float(c.value_of_css_property("left")[:-2]))
        return [c.text for c in cells]

    row_texts = until("the val_mse row of the Metrics table", val_mse_row)
    for name, text in zip(columns, row_texts, strict=True):
        decimals = len(text.partition(".")[2])  # the UI rounds; allow half a last digit
        assert abs(float(text) - val_mse[name]) <= 0.5 * 10**-decimals + 1e-12, (name, text)
    driver.save_screenshot(str(tmp_path / "compare.png"))
    print(f"screenshots: {tmp_path / 'runs-table.png'}, {tmp_path / 'compare.png'}")
