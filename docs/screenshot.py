"""Take docs/mlflow-compare.png: the MLflow compare view of the latest pipeline run's child runs.

    .venv/bin/forecast demo                 # fills the project's store (mlruns/)
    .venv/bin/python docs/screenshot.py     # serves it with `forecast ui`, screenshots the compare view

It reads the latest pipeline run of the demo experiment (or --experiment) in the project's store
(or --tracking-uri), starts `forecast ui` on a free loopback port, and opens the compare view of
that run's children in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium with both paths given: nothing is downloaded). The parallel-coordinates plot is set to
model.name against val_mse, test_mse and test_mae, the long Parameters/Artifacts/Tags sections
are folded and the Metrics table is scrolled to the validation metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# The loopback-server helpers the browser test uses (tests/servers.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import CHROMEDRIVER, CHROMIUM, chromium_driver, start_forecast_ui, stop

ROOT = Path(__file__).resolve().parents[1]
PLOT_PARAMS = ["model.name"]
PLOT_METRICS = ["val_mse", "test_mse", "test_mae"]
FOLD = ["Parameters", "Artifacts", "Tags"]
FIRST_METRIC_SHOWN = "val_loss"  # the Metrics table shows ~7 rows: val_loss .. val_mse_orig
WAIT = 90


def latest_pipeline(tracking_uri: str, experiment: str) -> tuple[str, str, list[str]]:
    """(experiment id, pipeline run id, its finished child run ids, oldest first)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"error: no experiment {experiment!r} in {tracking_uri}; run `forecast demo` first")
    parents = client.search_runs(
        [exp.experiment_id],
        "tags.role = 'pipeline' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        sys.exit(f"error: no finished pipeline run in {experiment!r}; run `forecast demo` first")
    parent = parents[0].info.run_id
    children = client.search_runs(
        [exp.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    return exp.experiment_id, parent, [r.info.run_id for r in children]


def chromium(profile: str, width: int, height: int):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"error: {path} is missing: `apt-get install chromium chromium-driver`")
    return chromium_driver(profile, "--hide-scrollbars", f"--window-size={width},{height}")


def shoot_compare(driver, base: str, experiment_id: str, run_ids: list[str], output: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)
    runs = json.dumps(run_ids, separators=(",", ":"))
    driver.get(f"{base}/#/compare-runs?runs={runs}&experiments={json.dumps([experiment_id])}")
    heading = f"Comparing {len(run_ids)} Runs from 1 Experiment"
    wait.until(lambda d: heading in d.find_element(By.TAG_NAME, "body").text)
    time.sleep(1)
    for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label=Close]"):
        close.click()  # the assistant side panel

    def section(title: str):
        return driver.find_element(
            By.XPATH, f"//div[contains(@class, 'collapse-header')][normalize-space(.)='{title}']"
        )

    for title in FOLD:
        header = section(title)
        if header.get_attribute("aria-expanded") == "true":
            header.click()

    # Parallel coordinates: the family against the headline metrics.
    selects = driver.find_elements(By.CSS_SELECTOR, ".du-bois-light-select-multiple")
    params, metrics = selects[0], selects[1]
    for select, wanted in ((params, PLOT_PARAMS), (metrics, PLOT_METRICS)):
        for chip in select.find_elements(By.CSS_SELECTOR, ".du-bois-light-select-selection-item"):
            if chip.text not in wanted:
                chip.find_element(By.CSS_SELECTOR, ".du-bois-light-select-selection-item-remove").click()
        have = {c.text for c in select.find_elements(By.CSS_SELECTOR, ".du-bois-light-select-selection-item")}
        box = select.find_element(By.CSS_SELECTOR, "input")
        for name in wanted:
            if name not in have:
                box.send_keys(name)
                box.send_keys(Keys.ENTER)
        box.send_keys(Keys.ESCAPE)

    driver.execute_script("document.activeElement.blur()")  # no focus ring on the metrics select
    for toggle in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Toggle sidebar']"):
        toggle.click()  # room for every run's column

    # Size the window to the page down to the last section (the page scrolls inside itself).
    to_top = "document.querySelectorAll('*').forEach(e => { e.scrollTop = 0 })"
    time.sleep(1)
    driver.execute_script(to_top)
    bottom = section(FOLD[-1]).rect
    driver.set_window_size(driver.get_window_size()["width"], int(bottom["y"] + bottom["height"] + 200))
    time.sleep(2)
    driver.execute_script(to_top)

    # The Metrics table scrolls inside itself: bring the validation metrics into view.
    grids = (
        section("Metrics")
        .find_element(By.XPATH, "..")
        .find_elements(By.CSS_SELECTOR, ".ReactVirtualized__Grid")
    )
    values = grids[-1]  # the values (right) scroll; the metric names (left) follow them
    first = f"//a[@title='Plot chart'][normalize-space(.)='{FIRST_METRIC_SHOWN}']"
    origin = ScrollOrigin.from_element(values)
    for _ in range(50):
        link = driver.find_elements(By.XPATH, first)
        if link:
            top = float(link[0].find_element(By.XPATH, "..").value_of_css_property("top").removesuffix("px"))
            delta = int(top - values.get_property("scrollTop"))
            ActionChains(driver).scroll_from_origin(origin, 0, delta).perform()
            break
        ActionChains(driver).scroll_from_origin(origin, 0, 135).perform()
        time.sleep(0.2)
    time.sleep(0.5)
    # In headless Chromium the names column can lag behind the values: line it up.
    driver.execute_script("arguments[0].scrollTop = arguments[1].scrollTop", grids[0], values)
    time.sleep(1)
    output.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(output))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="MLflow store (default: the project's mlruns/)")
    parser.add_argument("--experiment", default="forecasting-demo")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "mlflow-compare.png")
    parser.add_argument("--width", type=int, default=2200)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from forecasting.config import TrackingConfig
    from forecasting.tracking import resolve_tracking_uri

    # As `forecast demo` and `forecast ui`: MLFLOW_TRACKING_URI, else the project's mlruns/.
    tracking_uri = args.tracking_uri or resolve_tracking_uri(TrackingConfig())[0]
    experiment_id, parent, children = latest_pipeline(tracking_uri, args.experiment)
    if not children:
        sys.exit(f"error: pipeline run {parent} has no finished child runs")
    with tempfile.TemporaryDirectory(prefix="mlflow-screenshot-") as tmp:
        try:
            proc, base = start_forecast_ui(tracking_uri, Path(tmp) / "ui.log")
        except RuntimeError as err:
            sys.exit(f"error: `forecast ui` did not start: {err}")
        try:
            driver = chromium(str(Path(tmp) / "profile"), args.width, 1200)
            try:
                shoot_compare(driver, base, experiment_id, children, args.output)
            finally:
                driver.quit()
        finally:
            stop(proc)
    print(f"{args.output}: compare view of {len(children)} child runs of pipeline run {parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
