"""The quickstart notebook in a real browser: JupyterLab, Notebook 7 and Voilà in Debian's Chromium.

One Jupyter server (own process group, temporary Jupyter config/data/runtime dirs) serves
all three front ends. In each, a copy of notebooks/01_quickstart.ipynb runs and the test
checks what a user would see: every widget renders (slider and picture in the DOM, no
"Error displaying widget"), ArrowRight on LayerExplorer's focused channel slider changes
the picture's bytes, and (Lab, Notebook 7) clicking a class bar of GradCamViewer changes the overlay.
Any console error or warning of the widgets or bqplot fails the test. The notebook Lab
saved, reopened with no kernel, must still show the widgets' last pictures.
Screenshots of each widget at 1400 and 1000 px and each page's console log go to
test-artifacts/browser/.

Needs /usr/bin/chromium (Debian's ``chromium`` package; ``playwright install`` cannot
download browsers here). Without it the test fails under CI=true, naming the fix, and
is skipped elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from secrets import token_hex

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
# Binder's app settings (postBuild copies them): Notebook 7's arrow keys reach a focused slider.
APP_SETTINGS = ROOT / "binder" / "overrides.json"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_S = 120
RUN_ALL_S = 240  # kernel start, TensorFlow import, three widgets, on 2 shared cores
UPDATE_S = 60  # a widget's reaction to one interaction

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Lab's settings for a quiet, deterministic page: no news or update pop-ups (and no
# requests for them), and every cell attached to the DOM, not only those on screen.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: the browser test drives Debian's Chromium. Install it with "
            "`apt-get update && apt-get install -y chromium` (.ci/run does this before the tests)."
        )
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        message = "the playwright package is missing: pip install -e '.[test]' installs it"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """The server's children, kernels included (jupyter_client starts each in its own session)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _kill(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@contextmanager
def jupyter_lab(workdir: Path, log_path: Path):
    """A JupyterLab server over ``workdir/root``; yields its base URL and token.

    Everything Jupyter writes (config, data, runtime, IPython profile, Lab settings and
    workspaces) goes under ``workdir``. The server runs in its own process group; at
    exit that group and every process it started are killed, whatever happened.
    """
    port, token = _free_port(), token_hex(16)
    dirs = {name: workdir / name for name in ("config", "data", "runtime", "ipython", "settings", "workspaces", "app-settings")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    shutil.copy(APP_SETTINGS, dirs["app-settings"] / "overrides.json")
    for name, settings in LAB_SETTINGS.items():
        target = dirs["settings"] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings))
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        CNNVIZ_OFFLINE="1",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", "--allow-root", f"--ServerApp.root_dir={workdir / 'root'}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands without menus
        "--JupyterNotebookApp.expose_app_in_browser=True",
        f"--LabApp.app_settings_dir={dirs['app-settings']}", f"--JupyterNotebookApp.app_settings_dir={dirs['app-settings']}",
    ]  # fmt: skip
    log = open(log_path, "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    children: set[int] = set()
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert server.poll() is None, f"JupyterLab exited with {server.returncode}; see {log_path}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"JupyterLab did not listen within {SERVER_START_S} s; see {log_path}"
                time.sleep(0.5)

        def remember_children():
            children.update(_descendants(server.pid))

        yield base_url, token, remember_children
    finally:
        children.update(_descendants(server.pid))
        try:
            os.killpg(server.pid, signal.SIGTERM)  # lets the server shut its kernels down
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=15)
        _kill(children, signal.SIGKILL)
        log.close()


def _widget_output(page, code: str):
    """The output area of the code cell whose source contains ``code``."""
    # In the notebook shown: Lab keeps other notebooks open in hidden tabs.
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").filter(
        has=page.locator(".jp-InputArea-editor", has_text=code)
    )
    assert cell.count() == 1, f"expected one cell with {code!r}, found {cell.count()}"
    return cell.locator(".jp-OutputArea")


def _picture_bytes(page, element, attempts: int = 5) -> str:
    """A hash of the bytes behind an <img src> or an SVG <image href> (blob: or data: URL).

    A widget that draws a new picture revokes the blob: URL of the old one, so a fetch
    that raced a redraw is tried again with the new URL.
    """
    from playwright.sync_api import Error as PlaywrightError

    for attempt in range(attempts):
        url = element.evaluate("e => e.getAttribute('src') || e.getAttribute('href') || e.getAttribute('xlink:href')")
        assert url, "the picture has no URL"
        try:
            data = page.evaluate(
                """async url => {
                    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
                    let text = ''; for (const b of bytes) text += String.fromCharCode(b);
                    return btoa(text);
                }""",
                url,
            )
            break
        except PlaywrightError as error:
            if "Failed to fetch" not in str(error) or attempt == attempts - 1:
                raise
            page.wait_for_timeout(100)
    assert data, f"no bytes behind {url[:60]}"
    return hashlib.sha256(data.encode()).hexdigest()


def _wait_for_change(page, element, before: str, what: str) -> str:
    deadline = time.monotonic() + UPDATE_S
    while True:
        after = _picture_bytes(page, element)
        if after != before:
            return after
        assert time.monotonic() < deadline, f"{what} did not change within {UPDATE_S} s"
        page.wait_for_timeout(250)


# Where a console message comes from the widgets: their extensions' code, or words about them
# (an SVG attribute error is logged from the code that set it: bqplot's).
WIDGET_CODE = re.compile(r"/(bqplot|@jupyter-widgets|jupyter-widgets|cnnviz)[/-]", re.IGNORECASE)
WIDGET_WORDS = re.compile(r"widget|bqplot|\bcomm\b|<\w+> attribute|uncaught|typeerror|referenceerror", re.IGNORECASE)
WIDTHS = (1400, 1000)  # a wide screen and a laptop's browser window
SCREENSHOT_HEIGHT = 2000  # the whole widget on screen: Lab scrolls its notebook panel, and a shot clips at its edge
# The cell of each widget in the quick start, by a piece of its code.
QUICKSTART_WIDGETS = {
    "layer_explorer": "LayerExplorer(model, images[:16])",
    "filter_gallery": "FilterGallery(model, value_range=(0, 1))",
    "gradcam_viewer": "GradCamViewer(model, images[0]",
}


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    """One Jupyter server for all three front ends: Lab, Notebook 7 and Voilà are its extensions."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    workdir = tmp_path_factory.mktemp("jupyter")
    (workdir / "root").mkdir()
    with jupyter_lab(workdir, ARTIFACTS / "jupyter.log") as (base_url, token, remember_children):
        yield base_url, token, remember_children, workdir / "root"


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    # Chromium's own files (crash reports, caches) go to XDG dirs: keep them in a temporary dir too.
    home = tmp_path_factory.mktemp("chromium")
    xdg = {name: str(home / name.lower()) for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, env={**os.environ, **xdg})
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def watched_page(browser, name: str):
    """A page at the first width whose console must stay clean: any error or warning fails the test.

    Every message is logged to test-artifacts/browser/<name>-console.log, and a full-page
    screenshot is taken whatever happens.
    """
    console, page_errors = [], []
    page = browser.new_page(viewport={"width": WIDTHS[0], "height": 1000})
    page.on("console", lambda message: console.append((message.type, message.text, message.location.get("url", ""))))
    page.on("pageerror", lambda error: page_errors.append((str(error), error.stack or "")))
    try:
        yield page
    finally:
        page.screenshot(path=str(ARTIFACTS / f"{name}-page.png"), full_page=True)
        logged = [f"{kind}: {text} ({url})" for kind, text, url in console] + [f"uncaught: {stack}" for _, stack in page_errors]
        (ARTIFACTS / f"{name}-console.log").write_text("\n".join(logged) + "\n")
        page.close()
    uncaught = [text for text, stack in page_errors if _ours(text, stack)]
    assert not uncaught, f"{name}: uncaught JavaScript errors in the widgets: {uncaught}"
    complaints = [f"{kind}: {text}" for kind, text, url in console if kind in ("error", "warning") and _ours(text, url)]
    assert not complaints, f"{name}: the browser console has errors or warnings of the widgets: {complaints[:5]}"


def _ours(text: str, url: str) -> bool:
    """A message of the widgets' front ends (ipywidgets, bqplot) or about what they draw.

    Each front end logs its own warnings (Notebook 7's duplicated menu entries, Voilà's
    offline CDN fonts and its shared-module versions): those are not the widgets'.
    """
    return bool(WIDGET_CODE.search(url) or WIDGET_WORDS.search(text))


def _copy_quickstart(root: Path, name: str) -> Path:
    # A copy per front end: Lab saves the notebook it runs, and committed notebooks carry no outputs.
    target = root / name
    shutil.copy(QUICKSTART, target)
    return target


def test_quickstart_in_jupyterlab_and_reopened_without_a_kernel(server, browser):
    base_url, token, remember_children, root = server
    notebook = _copy_quickstart(root, "lab.ipynb")
    with watched_page(browser, "jupyterlab") as page:
        page.goto(f"{base_url}/lab/tree/{notebook.name}?token={token}", timeout=SERVER_START_S * 1000)
        _run_quickstart(page, remember_children, "jupyterlab")
        page.evaluate("jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("() => !jupyterapp.shell.currentWidget.context.model.dirty", timeout=UPDATE_S * 1000)
    saved = json.loads(notebook.read_text())
    # Reopened for a kernel and language this server lacks, "No Kernel" chosen: no widget model can be
    # found, so what shows is the picture each widget adds to its output (to_png), not an error.
    saved["metadata"]["kernelspec"] = {"name": "no-such-kernel", "display_name": "none", "language": "none"}
    saved["metadata"].pop("language_info", None)
    reopened = root / "reopened.ipynb"
    reopened.write_text(json.dumps(saved))
    with watched_page(browser, "reopened") as page:
        # A workspace of its own: the default one would also restore lab.ipynb, still on its kernel, in a
        # hidden tab, where bqplot draws its figures at size 0 (negative <rect> sizes in the console).
        page.goto(f"{base_url}/lab/workspaces/reopened/tree/{reopened.name}?reset&token={token}", timeout=SERVER_START_S * 1000)
        page.wait_for_selector(".jp-Dialog", timeout=SERVER_START_S * 1000)
        page.keyboard.press("Escape")  # the kernel dialog: no kernel
        for name, code in QUICKSTART_WIDGETS.items():
            output = _widget_output(page, code)
            output.locator("img, svg image").first.wait_for(timeout=UPDATE_S * 1000)
            assert "Error displaying widget" not in output.inner_text(), f"{name} reopened: {output.inner_text()[:300]}"
            output.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            output.screenshot(path=str(ARTIFACTS / f"reopened-without-kernel-{name}.png"))


def test_quickstart_in_notebook_7(server, browser):
    base_url, token, remember_children, root = server
    notebook = _copy_quickstart(root, "notebook7.ipynb")
    with watched_page(browser, "notebook7") as page:
        page.goto(f"{base_url}/notebooks/{notebook.name}?token={token}", timeout=SERVER_START_S * 1000)
        _run_quickstart(page, remember_children, "notebook7")
        # With the slider's arrow keys its own, they still move between cells in command mode.
        page.evaluate(
            "() => { const notebook = jupyterapp.shell.currentWidget.content; notebook.mode = 'command';"
            " notebook.activeCellIndex = 0; notebook.activeCell.node.focus(); }"
        )
        page.keyboard.press("ArrowDown")
        assert page.evaluate("jupyterapp.shell.currentWidget.content.activeCellIndex") == 1


def test_quickstart_in_voila(server, browser):
    base_url, token, remember_children, root = server
    notebook = _copy_quickstart(root, "voila.ipynb")
    with watched_page(browser, "voila") as page:
        page.goto(f"{base_url}/voila/render/{notebook.name}?token={token}", timeout=RUN_ALL_S * 1000)
        # Voilà shows outputs only, in cell order: the three widgets are the page's first three with a slider.
        widget_boxes = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-slider"))
        page.wait_for_function(
            "() => document.querySelectorAll('.jp-OutputArea-output .widget-slider').length >= 3", timeout=RUN_ALL_S * 1000
        )
        remember_children()
        outputs = dict(zip(QUICKSTART_WIDGETS, (widget_boxes.nth(index) for index in range(3))))
        _check_every_widget(page, outputs, "voila")
        _check_channel_slider(page, outputs["layer_explorer"])


def run_all_cells(page):
    """Run every cell of the notebook open in Lab or Notebook 7 and wait until the kernel is idle."""
    page.wait_for_selector(".jp-Notebook", timeout=SERVER_START_S * 1000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=SERVER_START_S * 1000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():  # kernel selection on first open: take the proposed kernel
        page.keyboard.press("Enter")
    page.wait_for_function(
        "() => { const w = jupyterapp.shell.currentWidget; return w && w.sessionContext && w.sessionContext.session }",
        timeout=SERVER_START_S * 1000,
    )
    page.evaluate("jupyterapp.commands.execute('notebook:run-all-cells')")
    # Done when every code cell has an execution count and the kernel is idle again.
    page.wait_for_function(
        """() => {
            const panel = jupyterapp.shell.currentWidget;
            const cells = panel.content.widgets.filter(c => c.model.type === 'code');
            const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
            return kernel && kernel.status === 'idle' && cells.every(c => c.model.executionCount !== null);
        }""",
        timeout=RUN_ALL_S * 1000,
        polling=500,
    )


def _run_quickstart(page, remember_children, front_end: str):
    """Run every cell of the open quick start (Lab or Notebook 7), check each widget and two interactions."""
    run_all_cells(page)
    remember_children()
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, f"a cell wrote to stderr: {errors.first.inner_text()[:2000]}"

    outputs = {name: _widget_output(page, code) for name, code in QUICKSTART_WIDGETS.items()}
    _check_every_widget(page, outputs, front_end)
    # Both interactions are tried, so that one run reports every broken one.
    problems = []
    checks = (
        (_check_channel_slider, outputs["layer_explorer"]),
        (_check_class_bar, outputs["gradcam_viewer"]),
    )
    for check, output in checks:
        try:
            check(page, output)
        except AssertionError as error:
            problems.append(str(error).splitlines()[0])
    assert not problems, "; ".join(problems)


def _check_every_widget(page, outputs: dict, front_end: str):
    """Each widget has a slider and a picture and no error; a screenshot of it at every width."""
    for name, output in outputs.items():
        output.locator(".widget-slider").first.wait_for(timeout=UPDATE_S * 1000)
        output.locator("img, svg image").first.wait_for(timeout=UPDATE_S * 1000)
        assert "Error displaying widget" not in output.inner_text(), f"{name}: {output.inner_text()[:500]}"
    assert page.get_by_text("Error displaying widget").count() == 0
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": SCREENSHOT_HEIGHT})
        for name, output in outputs.items():
            output.scroll_into_view_if_needed()
            page.wait_for_timeout(500)  # let bqplot finish drawing (and relayout) before the picture is taken
            output.screenshot(path=str(ARTIFACTS / f"{front_end}-{name}-{width}.png"))
    page.set_viewport_size({"width": WIDTHS[0], "height": 1000})


def _check_channel_slider(page, explorer):
    """ArrowRight on LayerExplorer's focused channel slider moves it and changes the feature map's bytes.

    Notebook 7 needs binder/overrides.json for this (its arrow-key shortcuts run first: docs/DESIGN_NOTES.md).
    """
    slider = explorer.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text="channel")).first
    feature_map = explorer.locator(".bqplot svg image").first  # the map is a bqplot Image mark
    before = _picture_bytes(page, feature_map)
    readout = slider.locator(".widget-readout")
    start = readout.inner_text().strip()
    slider.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([element, start]) => element.textContent.trim() !== start", arg=[readout.element_handle(), start],
        timeout=UPDATE_S * 1000,
    )  # fmt: skip
    try:
        _wait_for_change(page, feature_map, before, "LayerExplorer's feature map after a channel move")
    except AssertionError as error:
        # The readout is drawn from the kernel's state: it tells a stale picture from a stuck slider.
        readout_line = explorer.locator(".widget-html").filter(has_text=" of ").first.inner_text()
        explorer.screenshot(path=str(ARTIFACTS / "layer_explorer_channel_moved.png"))
        raise AssertionError(f"{str(error).splitlines()[0]}; the widget's readout says {readout_line!r}") from None
    explorer.screenshot(path=str(ARTIFACTS / "layer_explorer_channel_moved.png"))


def _bar_marks(figure):
    """A bqplot figure's marks, in the order of its ``marks``: each is a clipped group."""
    return figure.locator("svg.svg-figure g[clip-path]")


def click_bar(figure, index: int):
    """Click bar ``index`` of a BarChart's figure as a user does: on the bar, or, for a bar too short
    to hit, at the top of its column, where the chart's transparent full-height hit area (its first
    mark; the visible bars are the last) takes the click. A plain ``rect.bar`` matches both marks."""
    marks = _bar_marks(figure)
    bar = marks.last.locator("rect.bar").nth(index)
    box = bar.bounding_box()
    if box is not None and box["height"] >= 4:
        bar.click()
    else:
        column = marks.first.locator("rect.bar").nth(index)
        column.click(position={"x": column.bounding_box()["width"] / 2, "y": 2})


def _check_class_bar(page, viewer):
    """Clicking a class bar of GradCamViewer changes the overlay."""
    # The picture under the caption "overlay" (an HTML widget) in the same VBox.
    overlay = viewer.locator(
        "xpath=.//div[contains(@class, 'widget-vbox')]"
        "[./div[contains(@class, 'widget-html')][normalize-space(.) = 'overlay']]/img"
    )
    assert overlay.count() == 1, f"expected one overlay picture, found {overlay.count()}"
    before = _picture_bytes(page, overlay)
    label = viewer.locator(".widget-html").filter(has_text="probability").first
    # The prediction chart: the figure titled "Top-k classes" (the heatmap's colour bar is a bqplot figure too).
    chart = viewer.locator(".bqplot").filter(has_text="Top-").first
    bars = _bar_marks(chart).last.locator("rect.bar")
    assert bars.count() >= 2, f"expected the top-k class bars, found {bars.count()}"
    click_bar(chart, 1)
    _wait_for_change(page, overlay, before, "GradCamViewer's overlay after clicking the second class bar")
    assert "probability" in label.inner_text()
    viewer.screenshot(path=str(ARTIFACTS / "gradcam_viewer_second_class.png"))


CONV_ARITHMETIC_CODE = "arithmetic = cw.ConvArithmetic(model, images[3])"


def _notebook(path: Path, sources) -> Path:
    """A notebook at ``path`` with one code cell per source, on the python3 kernel."""
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source} for source in sources]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_conv_arithmetic_explains_a_clicked_position_in_jupyterlab(server, browser):
    """ConvArithmetic: a click on conv1's map explains that position; screenshots at both widths."""
    base_url, token, remember_children, root = server
    source = (
        "import cnnviz_widgets as cw\n\nmodel = cw.demo.load_model()\nimages, _ = cw.demo.load_images()\n"
        f"{CONV_ARITHMETIC_CODE}\narithmetic"
    )
    notebook = _notebook(root / "conv_arithmetic.ipynb", [source])
    with watched_page(browser, "conv_arithmetic") as page:
        page.goto(f"{base_url}/lab/workspaces/arithmetic/tree/{notebook.name}?reset&token={token}", timeout=SERVER_START_S * 1000)
        run_all_cells(page)
        remember_children()
        output = _widget_output(page, CONV_ARITHMETIC_CODE)
        feature_map = output.locator(".bqplot svg image").first  # the channel's map: the first bqplot figure
        feature_map.wait_for(timeout=UPDATE_S * 1000)
        assert "Error displaying widget" not in output.inner_text()
        equation = output.locator(".widget-html").filter(has_text="The layer itself computed").first
        assert "✓ the same" in equation.inner_text()
        before = equation.inner_text()
        box = feature_map.bounding_box()
        # The middle of pixel (row 48, column 16) of the 64×64 map.
        page.mouse.click(box["x"] + box["width"] * 16.5 / 64, box["y"] + box["height"] * 48.5 / 64)
        caption = output.locator(".widget-html").filter(has_text="click to pick").first
        page.wait_for_function(
            "element => element.textContent.includes('row 48, column 16')", arg=caption.element_handle(), timeout=UPDATE_S * 1000
        )
        page.wait_for_function(
            "([element, before]) => element.innerText !== before", arg=[equation.element_handle(), before], timeout=UPDATE_S * 1000
        )
        assert "✓ the same" in equation.inner_text()
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": SCREENSHOT_HEIGHT})
            output.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            output.screenshot(path=str(ARTIFACTS / f"jupyterlab-conv_arithmetic-{width}.png"))
        page.set_viewport_size({"width": WIDTHS[0], "height": SCREENSHOT_HEIGHT})
        output.locator("select").first.select_option("conv2")  # 16 input channels: their sums as a chart
        output.locator(".bqplot").filter(has_text="Sum per input channel").locator("rect.bar").first.wait_for(timeout=UPDATE_S * 1000)
        page.wait_for_timeout(500)
        output.screenshot(path=str(ARTIFACTS / f"jupyterlab-conv_arithmetic-conv2-{WIDTHS[0]}.png"))
# A ChannelCard and a GradCamViewer linked: a click on a contribution bar shows that channel on the card.
CARD_CELLS = {
    "setup": "import cnnviz_widgets as cw\nmodel = cw.demo.load_model()\nimages, labels = cw.demo.load_images()",
    "channel_card": "card = cw.ChannelCard(model, images, class_names=cw.demo.CLASS_NAMES)\ncard",
    "linked_viewer": "viewer = cw.GradCamViewer(model, images[0], class_names=cw.demo.CLASS_NAMES)\nlink = cw.link(viewer, card)\nviewer",
}


def test_channel_card_follows_a_click_on_a_contribution_bar(server, browser):
    base_url, token, remember_children, root = server
    notebook = _notebook(root / "channel_card.ipynb", CARD_CELLS.values())
    with watched_page(browser, "channel_card") as page:
        page.goto(f"{base_url}/lab/workspaces/card/tree/{notebook.name}?reset&token={token}", timeout=SERVER_START_S * 1000)
        run_all_cells(page)
        remember_children()
        outputs = {name: _widget_output(page, CARD_CELLS[name].splitlines()[0]) for name in ("channel_card", "linked_viewer")}
        for name, output in outputs.items():
            output.locator("img, svg image").first.wait_for(timeout=UPDATE_S * 1000)
            assert "Error displaying widget" not in output.inner_text(), f"{name}: {output.inner_text()[:500]}"
        card = outputs["channel_card"]
        summary = card.locator(".widget-html").filter(has_text="mean activation").first
        before = summary.inner_text()
        chart = outputs["linked_viewer"].locator(".bqplot").filter(has_text="Channels of").first
        bars = _bar_marks(chart).last.locator("rect.bar")
        assert bars.count() >= 3, f"expected the contribution bars, found {bars.count()}"
        click_bar(chart, 2)
        page.wait_for_function(
            "([element, before]) => element.textContent !== before", arg=[summary.element_handle(), before], timeout=UPDATE_S * 1000
        )
        assert "channel" in summary.inner_text()
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": SCREENSHOT_HEIGHT})
            for name, output in outputs.items():
                output.scroll_into_view_if_needed()
                page.wait_for_timeout(1000)  # bqplot's drawing, and the card's feature visualisation
                output.screenshot(path=str(ARTIFACTS / f"jupyterlab-{name}-{width}.png"))
# GradCamViewer's method menu, compare mode and trust panel (issue 13), in a notebook of their own.
TRUST_NOTEBOOK_CELLS = [
    "import cnnviz_widgets as cw\nfrom cnnviz_widgets.core.attribution import METHODS\n"
    "model = cw.demo.load_model()\nimages, labels = cw.demo.load_images()",
    "viewer = cw.GradCamViewer(model, images[0], class_names=cw.demo.CLASS_NAMES, compare=list(METHODS)[:2])\nviewer",
]
CHECK_S = 180  # the sanity cascade of the demo model on 2 shared cores


def test_method_menu_compare_and_trust_panel_in_jupyterlab(server, browser):
    base_url, token, remember_children, root = server
    notebook = _notebook(root / "trust_panel.ipynb", TRUST_NOTEBOOK_CELLS)
    with watched_page(browser, "trust_panel") as page:
        page.goto(f"{base_url}/lab/workspaces/trust/tree/{notebook.name}?reset&token={token}", timeout=SERVER_START_S * 1000)
        run_all_cells(page)
        remember_children()
        viewer = _widget_output(page, "cw.GradCamViewer(")
        viewer.locator("img").first.wait_for(timeout=UPDATE_S * 1000)
        assert "Error displaying widget" not in viewer.inner_text(), viewer.inner_text()[:500]
        # The method menu lists every method; the compare row captions each map with its method's name.
        menu = viewer.locator(".widget-dropdown").filter(has_text="method").locator("select")
        methods = menu.locator("option").all_inner_texts()
        assert "Grad-CAM" in methods, methods
        assert viewer.locator(".jupyter-widget-tagsinput, .widget-tagsinput").count() == 1
        assert viewer.get_by_text("Grad-CAM at ").count() >= 1
        # Deletion / insertion: each chart draws the map's, the random and the centre curves.
        viewer.get_by_role("button", name="Deletion / insertion").click()
        page.wait_for_function(
            "e => e.querySelectorAll('.bqplot path.curve, .bqplot path.line').length >= 6 || /failed/.test(e.innerText)",
            arg=viewer.element_handle(), timeout=CHECK_S * 1000,
        )  # fmt: skip
        assert "failed" not in viewer.inner_text(), viewer.inner_text()[-800:]
        assert viewer.get_by_text("area under the curve").count() == 2  # deletion and insertion, each with its random baseline
        # The sanity check: one picture per randomised layer, with its rank correlation.
        viewer.get_by_role("button", name="Sanity check").click()
        page.wait_for_function(
            "e => (e.innerText.match(/ρ = /g) || []).length >= 2 || /failed/.test(e.innerText)",
            arg=viewer.element_handle(), timeout=CHECK_S * 1000,
        )  # fmt: skip
        page.wait_for_function("e => /\\bdone\\b/.test(e.innerText)", arg=viewer.element_handle(), timeout=CHECK_S * 1000)
        assert "failed" not in viewer.inner_text(), viewer.inner_text()[-800:]
        if len(methods) > 1:  # the heatmap follows the menu
            heatmap = viewer.locator("xpath=.//div[contains(@class, 'widget-hbox')][.//*[contains(@class, 'bqplot')]]/img").first
            before = _picture_bytes(page, heatmap)
            menu.select_option(index=1)
            _wait_for_change(page, heatmap, before, "the heatmap after picking another method")
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": SCREENSHOT_HEIGHT})
            viewer.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            viewer.screenshot(path=str(ARTIFACTS / f"jupyterlab-trust_panel-{width}.png"))
