"""Take the README's screenshots of the latest demo pipeline run, in the MLflow and Prefect UIs.

    .venv/bin/forecast demo                 # fills the project's stores (mlruns/, .prefect/)
    .venv/bin/python docs/screenshot.py     # serves them on loopback, takes the three PNGs

It reads the latest finished pipeline run of the demo experiment (or --experiment) in the
project's MLflow store (or --tracking-uri), starts `forecast ui` on a free loopback port and
drives headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium with both
paths given: nothing is downloaded) as a person would:

- docs/img/mlflow-runs.png: the experiment's runs table (Model training view, sidebar folded),
  the pipeline run expanded to its child runs (the refit included) and, through "Columns", the
  Dataset/Source/Models columns hidden and val_mse, test_mse, test_mase and fit_seconds ticked,
  dragged into that order (MLflow lists them alphabetically) and widened so that the run name and
  the numbers are whole; cropped from the breadcrumbs to the last child run;
- docs/mlflow-compare.png: the compare view of that run's model runs (the refit, which has no
  val/test metric, left out): the parallel-coordinates plot set to model.name against val_mse,
  test_mse and test_mae, the long Parameters/Artifacts/Tags sections folded and the Metrics table
  scrolled to the validation metrics;
- docs/img/prefect-flow-run.png: the Prefect UI on the project's database (`prefect server start
  --no-services`, API and UI only, on a free loopback port with PREFECT_HOME, by default
  .prefect/ as for `forecast`; PREFECT_API_URL and PREFECT_UI_API_URL point at it): the latest
  completed forecast_pipeline flow run by start time (found through the Prefect client), its
  Artifacts tab, then its forecast-pipeline-summary artifact's page: the winner, the leaderboard,
  the champion decision, and the flow run's state message in full in the side panel; cropped to
  the page without the navigation. The server is stopped (its process group) at the end.

--only runs|compare|prefect (repeatable) takes only those.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The loopback-server helpers the browser test uses (tests/servers.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import CHROMEDRIVER, CHROMIUM, chromium_driver, free_port, start_forecast_ui, stop, wait_http

ROOT = Path(__file__).resolve().parents[1]
PLOT_PARAMS = ["model.name"]
PLOT_METRICS = ["val_mse", "test_mse", "test_mae"]
FOLD = ["Parameters", "Artifacts", "Tags"]
FIRST_METRIC_SHOWN = "val_loss"  # the Metrics table shows ~7 rows: val_loss .. val_mse_orig
WAIT = 90
# The runs table: the Attributes columns hidden to make room, the metrics shown (in this order).
RUNS_HIDE = ["Dataset", "Source", "Models"]
RUNS_METRICS = ["val_mse", "test_mse", "test_mase", "fit_seconds"]
RUNS_SIZE = (1600, 900)
# Column widths (CSS px): the whole pipeline run name, MLflow's full-precision numbers.
RUNS_WIDTHS = {"attributes.`Run Name`": 360, **{f"metrics.`{m}`": 165 for m in RUNS_METRICS}}
PREFECT_FLOW = "forecast_pipeline"
PREFECT_ARTIFACT = "forecast-pipeline-summary"
PREFECT_SIZE = (1600, 1400)


def latest_pipeline(tracking_uri: str, experiment: str) -> tuple[str, str, list[str], list[str]]:
    """(experiment id, pipeline run id, its finished model runs, every finished child run), the
    run ids oldest first; the model runs leave out the refit (``role=refit``, no val/test metric)."""
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
    models = [r.info.run_id for r in children if r.data.tags.get("role") != "refit"]
    return exp.experiment_id, parent, models, [r.info.run_id for r in children]


def chromium(profile: str, width: int, height: int):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"error: {path} is missing: `apt-get install chromium chromium-driver`")
    return chromium_driver(profile, "--hide-scrollbars", f"--window-size={width},{height}")


def save_cropped(driver, output: Path, box: tuple[float, float, float, float]) -> None:
    """Save the viewport cropped to ``box`` (left, top, right, bottom in CSS pixels)."""
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(driver.get_screenshot_as_png()))
    ratio = image.width / driver.execute_script("return window.innerWidth")
    left, top, right, bottom = (round(v * ratio) for v in box)
    output.parent.mkdir(parents=True, exist_ok=True)
    image.crop((max(left, 0), max(top, 0), min(right, image.width), min(bottom, image.height))).save(
        output, optimize=True
    )


def shoot_runs(
    driver, base: str, experiment_id: str, parent: str, models: list[str], children: list[str], output: Path
) -> None:
    """The runs table with the pipeline run expanded to its ``children`` (``models``: those with
    metrics) and the headline metrics as columns."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)

    def row(run_id: str) -> str:
        return f"[role=row][row-id='{run_id}']"

    def header(metric: str) -> str:
        return f"[role=columnheader][col-id='metrics.`{metric}`']"

    # The "Model training" view (MLflow 3 opens an experiment on its GenAI overview otherwise).
    driver.get(f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    expand = f"{row(parent)} button[data-component-id*=runnamecellrenderer]"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expand))
    time.sleep(1)
    for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label=Close]"):
        close.click()  # the assistant side panel
    for toggle in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Toggle sidebar']"):
        toggle.click()  # room for the columns
    driver.find_element(By.CSS_SELECTOR, expand).click()  # the "+" beside the pipeline run
    wait.until(lambda d: all(d.find_elements(By.CSS_SELECTOR, row(r)) for r in children))

    # "Columns": hide the wide attributes, tick the metrics.
    next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Columns").click()
    box = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder='Search columns']"))[0]
    for name, shown in [*((n, False) for n in RUNS_HIDE), *((m, True) for m in RUNS_METRICS)]:
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(name)
        node = (
            "//*[@data-testid='column-selector-tree']//div[contains(@class, 'tree-treenode')]"
            f"[.//span[contains(@class, 'tree-title')][normalize-space(.)='{name}']]"
        )
        found = wait.until(lambda d, node=node: d.find_elements(By.XPATH, node))[0]
        if ("checkbox-checked" in found.get_attribute("class")) != shown:
            found.find_element(By.CSS_SELECTOR, "span[class*=tree-title]").click()
            time.sleep(0.3)
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait.until(lambda d: all(d.find_elements(By.CSS_SELECTOR, header(m)) for m in RUNS_METRICS))

    # MLflow lists the metric columns alphabetically: drag each to its place (header onto header).
    def order() -> list[str]:
        cells = driver.find_elements(By.CSS_SELECTOR, "[role=columnheader][col-id^='metrics.']")
        return [c.get_attribute("col-id") for c in sorted(cells, key=lambda c: c.rect["x"])]

    for slot, metric in enumerate(RUNS_METRICS):
        if order()[slot] == f"metrics.`{metric}`":
            continue
        moving = driver.find_element(By.CSS_SELECTOR, header(metric))
        target = driver.find_element(By.CSS_SELECTOR, f"[role=columnheader][col-id='{order()[slot]}']")
        dx = target.rect["x"] + 10 - (moving.rect["x"] + moving.rect["width"] / 2)
        drag = ActionChains(driver).click_and_hold(moving)
        for _ in range(10):  # in steps, as a hand would: ag-grid starts a move after a few pixels
            drag.move_by_offset(round(dx / 10), 0).pause(0.05)
        drag.pause(0.3).release().perform()
        time.sleep(0.5)
    if order() != [f"metrics.`{m}`" for m in RUNS_METRICS]:
        sys.exit(f"error: could not order the metric columns as {RUNS_METRICS}: {order()}")

    # Widen the run names and the metrics so that neither is cut off ("0.65781789…").
    for col_id, width in RUNS_WIDTHS.items():
        cell = driver.find_element(By.CSS_SELECTOR, f"[role=columnheader][col-id='{col_id}']")
        handle = cell.find_element(By.CSS_SELECTOR, ".ag-header-cell-resize")
        if width > cell.rect["width"]:
            ActionChains(driver).drag_and_drop_by_offset(handle, width - cell.rect["width"], 0).perform()
            time.sleep(0.3)

    def filled(d) -> bool:  # a val_mse in every model run's row
        cells = [d.find_elements(By.CSS_SELECTOR, f"{row(r)} [col-id='metrics.`val_mse`']") for r in models]
        return all(c and c[0].text not in {"", "-"} for c in cells)

    wait.until(filled)
    title = driver.find_element(By.XPATH, "//h2[normalize-space(.)='Runs']")
    ActionChains(driver).move_to_element(title).perform()  # no hover highlight on a header
    driver.execute_script("document.activeElement.blur()")
    time.sleep(1)

    # Crop from the breadcrumbs to the last child run, and to the last metric column (or the
    # toolbar's Group by, whichever ends further right).
    crumbs = driver.find_element(By.XPATH, "//a[normalize-space(.)='Experiments']").rect
    rows = [driver.find_element(By.CSS_SELECTOR, row(r)).rect for r in children]
    grid = driver.find_element(By.CSS_SELECTOR, ".ag-root").rect
    last = driver.find_element(By.CSS_SELECTOR, header(RUNS_METRICS[-1])).rect
    group_by = next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Group by").rect
    right = max(last["x"] + last["width"], group_by["x"] + group_by["width"]) + 16
    bottom = max(r["y"] + r["height"] for r in rows) + 1
    save_cropped(driver, output, (grid["x"] - 16, crumbs["y"] - 16, right, bottom))


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


def _prefect_env(api_url: str, prefect_home: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def start_prefect_ui(prefect_home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` (API and UI only: no scheduler, nothing written by its services) on
    a free loopback port over the database under ``prefect_home``, in its own process group.
    Returns (process, base URL); stop it with ``stop(process)``."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, **_prefect_env(f"{base}/api", prefect_home)}
    prefect = Path(sys.executable).parent / "prefect"
    cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(f"{base}/api/health", timeout=120, proc=proc)
    except (RuntimeError, TimeoutError) as err:
        stop(proc)
        raise RuntimeError(f"{err}; log:\n{log.read_text()[-3000:]}") from None
    return proc, base


def latest_flow_run(api_url: str, prefect_home: Path) -> tuple[str, str, str]:
    """(flow run id, its name, its artifact id): the latest completed forecast_pipeline flow run
    by start time, and its forecast-pipeline-summary artifact."""
    os.environ.update(_prefect_env(api_url, prefect_home))  # before Prefect reads its settings
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[PREFECT_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        if not runs:
            sys.exit(f"error: no completed {PREFECT_FLOW} flow run under {prefect_home}; run `forecast demo`")
        run = runs[0]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[PREFECT_ARTIFACT]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            )
        )
    if not artifacts:
        sys.exit(f"error: flow run {run.name} ({run.id}) has no {PREFECT_ARTIFACT} artifact")
    return str(run.id), run.name, str(artifacts[0].id)


def shoot_prefect(driver, base: str, flow_run_id: str, artifact_id: str, output: Path) -> None:
    """The flow run page, its Artifacts tab, then the summary artifact's page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)
    driver.get(f"{base}/runs/flow-run/{flow_run_id}")
    tab = "//li[contains(@class, 'p-tab')][normalize-space(.)='Artifacts']"
    wait.until(lambda d: d.find_elements(By.XPATH, tab))[0].click()
    card = f"//a[contains(@href, '{artifact_id}')] | //*[normalize-space(.)='{PREFECT_ARTIFACT}']"
    wait.until(lambda d: d.find_elements(By.XPATH, card))[0].click()
    wait.until(lambda d: artifact_id in d.current_url and d.find_elements(By.TAG_NAME, "table"))
    time.sleep(1)
    # The side panel shortens the flow run's state message: show all of it.
    for more in driver.find_elements(By.XPATH, "//*[normalize-space(text())='See More']"):
        more.click()
    time.sleep(0.5)
    raw = driver.find_elements(By.XPATH, "//button[normalize-space(.)='Show raw data']")
    bottom = (
        raw[0].rect["y"] + raw[0].rect["height"] + 16
        if raw
        else driver.execute_script("return window.innerHeight")
    )
    # Crop the navigation off: from the artifact's title (the breadcrumb) to the side panel.
    crumb = driver.find_elements(By.XPATH, f"//a[normalize-space(.)='{PREFECT_ARTIFACT}']")
    left = min(c.rect["x"] for c in crumb) - 24 if crumb else 0
    width = driver.execute_script("return window.innerWidth")
    save_cropped(driver, output, (left, 0, width, bottom))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="MLflow store (default: the project's mlruns/)")
    parser.add_argument("--experiment", default="forecasting-demo")
    parser.add_argument(
        "--prefect-home",
        type=Path,
        default=Path(os.environ.get("PREFECT_HOME", ROOT / ".prefect")),
        help="Prefect's home, with its database (default: PREFECT_HOME, else the project's .prefect/)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "mlflow-compare.png")
    parser.add_argument("--runs-output", type=Path, default=ROOT / "docs" / "img" / "mlflow-runs.png")
    parser.add_argument("--prefect-output", type=Path, default=ROOT / "docs" / "img" / "prefect-flow-run.png")
    parser.add_argument("--width", type=int, default=2200, help="window width of the compare view")
    parser.add_argument(
        "--only", action="append", choices=["runs", "compare", "prefect"], help="take only these"
    )
    args = parser.parse_args(argv)
    only = set(args.only or ["runs", "compare", "prefect"])

    sys.path.insert(0, str(ROOT))
    from forecasting.config import TrackingConfig
    from forecasting.tracking import resolve_tracking_uri

    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        if only & {"runs", "compare"}:
            # As `forecast demo` and `forecast ui`: MLFLOW_TRACKING_URI, else the project's mlruns/.
            tracking_uri = args.tracking_uri or resolve_tracking_uri(TrackingConfig())[0]
            experiment_id, parent, models, children = latest_pipeline(tracking_uri, args.experiment)
            if not models:
                sys.exit(f"error: pipeline run {parent} has no finished child runs")
            try:
                proc, base = start_forecast_ui(tracking_uri, Path(tmp) / "ui.log")
            except RuntimeError as err:
                sys.exit(f"error: `forecast ui` did not start: {err}")
            try:
                if "runs" in only:
                    driver = chromium(str(Path(tmp) / "runs-profile"), *RUNS_SIZE)
                    try:
                        shoot_runs(driver, base, experiment_id, parent, models, children, args.runs_output)
                    finally:
                        driver.quit()
                    print(f"{args.runs_output}: runs table, pipeline run {parent} expanded")
                if "compare" in only:
                    driver = chromium(str(Path(tmp) / "compare-profile"), args.width, 1200)
                    try:
                        shoot_compare(driver, base, experiment_id, models, args.output)
                    finally:
                        driver.quit()
                    print(f"{args.output}: compare view of {len(models)} child runs of pipeline run {parent}")
            finally:
                stop(proc)
        if "prefect" in only:
            home = args.prefect_home.resolve()
            try:
                proc, base = start_prefect_ui(home, Path(tmp) / "prefect.log")
            except RuntimeError as err:
                sys.exit(f"error: `prefect server start` did not start: {err}")
            try:
                flow_run_id, name, artifact_id = latest_flow_run(f"{base}/api", home)
                driver = chromium(str(Path(tmp) / "prefect-profile"), *PREFECT_SIZE)
                try:
                    shoot_prefect(driver, base, flow_run_id, artifact_id, args.prefect_output)
                finally:
                    driver.quit()
            finally:
                stop(proc)
            print(f"{args.prefect_output}: {PREFECT_ARTIFACT} of flow run {name} ({flow_run_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
