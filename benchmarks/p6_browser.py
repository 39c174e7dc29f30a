"""P6: in the browser, from the input event to the new picture in the page.

JupyterLab (the browser test's server, tests/test_browser.py) runs a notebook with the
demo LayerExplorer and GradCamViewer and two LayerExplorers on VGG16(weights=None).
Each interaction is real input from Playwright (a key on a slider handle, a choice in a
dropdown, a click on a bar, a number typed in the class box); the page records the
input event's timestamp and the moment the watched picture's URL changes (an ``<img>``
also decoded), both on the page's clock. Each row is the median of its interactions.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from .timing import INFO, Row, checked_row, ms

ROOT = Path(__file__).resolve().parents[1]
VGG_LAYERS = ("block1_conv1", "block1_conv2")
MAP = (".bqplot svg image", 0)  # LayerExplorer's map: the first bqplot Image mark
OVERLAY = ("img", 2)  # GradCamViewer's pictures: image, heatmap, overlay

# Arms one measurement on an output area: window.__p6 resolves to the milliseconds from
# the first input event inside the area to the change of its index-th picture matching selector.
ARM = """([output, selector, index]) => {
    const url = () => {
        const picture = output.querySelectorAll(selector)[index];
        return picture && (picture.getAttribute('src') || picture.getAttribute('href') || picture.getAttribute('xlink:href'));
    };
    const before = url();
    let inputAt = null;
    const mark = event => { if (inputAt === null) inputAt = event.timeStamp; };
    const kinds = ['keydown', 'pointerdown', 'change'];
    kinds.forEach(kind => output.addEventListener(kind, mark, true));
    window.__p6 = new Promise((resolve, reject) => {
        const finish = async () => {
            observer.disconnect();
            kinds.forEach(kind => output.removeEventListener(kind, mark, true));
            const picture = output.querySelectorAll(selector)[index];
            if (picture.tagName === 'IMG') { try { await picture.decode(); } catch (error) {} }
            resolve(performance.now() - inputAt);
        };
        const observer = new MutationObserver(() => { if (inputAt !== null && url() !== before) finish(); });
        observer.observe(output, {subtree: true, childList: true, attributes: true});
        setTimeout(() => { observer.disconnect(); reject(new Error(
            `no new picture within 60 s (input seen: ${inputAt !== null}, pictures: ${output.querySelectorAll(selector).length})`
        )); }, 60000);
    });
}"""


def _browser_test():
    """tests/test_browser.py's server and helpers (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("cnnviz_browser_test", ROOT / "tests" / "test_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(image_size: int, images: int):
    return new_notebook(
        cells=[
            new_code_cell(
                "import cnnviz_widgets as cw\nimport keras\nimport numpy as np\n"
                "model = cw.demo.load_model()\nimages, labels = cw.demo.load_images()\n"
                f"vgg = keras.applications.VGG16(weights=None, input_shape=({image_size}, {image_size}, 3))\n"
                f"pixels = np.random.default_rng(0).uniform(0, 255, ({images}, {image_size}, {image_size}, 3)).astype('float32')"
            ),
            new_code_cell("cw.LayerExplorer(model, images[:16])"),
            new_code_cell("cw.GradCamViewer(model, images[0], class_names=cw.demo.CLASS_NAMES)"),
            new_code_cell(f"cw.LayerExplorer(vgg, pixels, layer={VGG_LAYERS[0]!r})"),
            new_code_cell(f"cw.LayerExplorer(vgg, pixels, layer={VGG_LAYERS[0]!r}, view='images')"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


def _median_ms(page, output, picture, act, repeats: int, warmups: int = 2) -> float:
    selector, index = picture
    values = []
    for step in range(warmups + repeats):
        page.evaluate(ARM, [output.element_handle(), selector, index])
        act(step)
        values.append(page.evaluate("window.__p6"))
    return statistics.median(values[warmups:])


def _slider_handle(output, label: str):
    slider = output.locator(".widget-slider").filter(has=output.page.locator(".widget-label", has_text=label)).first
    return slider.locator(".noUi-handle").first


def _arrows(page, handle):
    def act(step):
        handle.focus()
        page.keyboard.press("ArrowRight" if step % 2 == 0 else "ArrowLeft")

    return act


def _choose(select, layer: str):
    """Pick ``layer`` in a LayerExplorer's dropdown, whose labels read "name · kind · shape"."""
    index = select.evaluate("(s, name) => [...s.options].findIndex(o => o.text.split(/\\s/)[0] === name)", layer)
    assert index >= 0, f"no layer {layer!r} in the dropdown"
    select.select_option(index=index)


def _measure(page, outputs, repeats: int, click_bar) -> dict:
    explorer, viewer, vgg_channel, vgg_images = outputs
    layers = explorer.locator("select").first
    chart = viewer.locator(".bqplot").filter(has_text="Top-").first  # not the colour bar
    class_box = viewer.locator("input[type='number']").first
    vgg_layers = vgg_images.locator("select").first

    # The top two classes: Grad-CAM of lower ones is often empty, the same overlay, no new picture.
    top = class_box.input_value()
    click_bar(chart, 1)
    page.wait_for_function("([box, top]) => box.value !== top", arg=[class_box.element_handle(), top])
    second = class_box.input_value()
    click_bar(chart, 0)
    page.wait_for_function("([box, top]) => box.value === top", arg=[class_box.element_handle(), top])

    chosen = [top]  # the class the viewer shows once its box has caught up

    def click_class(step):
        chosen[0] = (second, top)[step % 2]
        click_bar(chart, (step + 1) % 2)

    def type_class(step):
        # The box catches up after the pictures (they go first): typing the class it still shows changes nothing.
        page.wait_for_function("([box, shown]) => box.value === shown", arg=[class_box.element_handle(), chosen[0]])
        chosen[0] = second if chosen[0] == top else top
        class_box.fill(chosen[0])
        class_box.press("Enter")

    for layer in VGG_LAYERS:  # the revisit row times later visits only; this ends on the second layer
        _choose(vgg_layers, layer)
    page.wait_for_timeout(1000)
    interactions = {
        "channel": (explorer, MAP, _arrows(page, _slider_handle(explorer, "channel"))),
        "layer": (explorer, MAP, lambda step: _choose(layers, ("conv2", "conv1")[step % 2])),
        "image": (explorer, MAP, _arrows(page, _slider_handle(explorer, "image"))),
        "class_click": (viewer, OVERLAY, click_class),
        "class_box": (viewer, OVERLAY, type_class),
        "vgg_channel": (vgg_channel, MAP, _arrows(page, _slider_handle(vgg_channel, "channel"))),
        "revisit": (vgg_images, MAP, lambda step: _choose(vgg_layers, VGG_LAYERS[step % 2])),
    }
    measured = {}
    for name, (output, picture, act) in interactions.items():
        try:
            measured[name] = _median_ms(page, output, picture, act, repeats)
        except Exception as error:
            raise RuntimeError(f"{name}: {str(error).splitlines()[0]}") from error
    return measured


def run(settings) -> list:
    repeats = min(20, max(10, settings.trait_repeats // 2))
    size = settings.image_size
    rows = [
        ("P6a", "channel", "demo LayerExplorer channel slider (key)", 30),
        ("P6b", "layer", "demo LayerExplorer layer dropdown", 50),
        ("P6c", "image", "demo LayerExplorer image slider (key)", 80),
        ("P6d", "class_click", "demo GradCamViewer class-bar click → overlay", 60),
        ("P6e", "class_box", "demo GradCamViewer class box (typed) → overlay", 60),
        ("P6f", "vgg_channel", f"LayerExplorer channel slider on VGG16-{size}", 60),
        ("P6g", "revisit", f"LayerExplorer images view, revisited layer, VGG16-{size}", 100),
    ]
    browser_test = _browser_test()
    if not browser_test.CHROMIUM.exists():
        return [Row(row_id, f"browser: {what}", f"not run: {browser_test.CHROMIUM} is missing", f"≤ {target} ms", INFO) for row_id, _, what, target in rows]
    measured = _run_in_lab(browser_test, _notebook(size, settings.explorer_images), repeats)
    return [
        checked_row(row_id, f"browser: {what}", measured[key] / 1000, f"{ms(measured[key] / 1000)} (median of {repeats})", f"≤ {target} ms", at_most=target / 1000)
        for row_id, key, what, target in rows
    ]


def _run_in_lab(browser_test, notebook, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        (workdir / "root").mkdir()
        nbformat.write(notebook, workdir / "root" / "p6.ipynb")
        with browser_test.jupyter_lab(workdir, workdir / "jupyter.log") as (base_url, token, remember_children):
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(browser_test.CHROMIUM), args=browser_test.CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(f"{base_url}/lab/tree/p6.ipynb?token={token}", timeout=browser_test.SERVER_START_S * 1000)
                    browser_test.run_all_cells(page)
                    remember_children()
                    outputs = [browser_test._widget_output(page, code) for code in (
                        "cw.LayerExplorer(model, images[:16])", "cw.GradCamViewer(", "layer='block1_conv1')", "view='images')",
                    )]  # fmt: skip
                    for output in outputs:
                        output.locator("img, svg image").first.wait_for(timeout=browser_test.UPDATE_S * 1000)
                    return _measure(page, outputs, repeats, browser_test.click_bar)
                finally:
                    browser.close()
