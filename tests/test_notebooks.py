"""The tutorial notebooks: committed without outputs, and each runs top to bottom offline.

Every notebook is executed with nbclient in a fresh kernel, in a temporary copy of
notebooks/ (they write files) with ``CNNVIZ_OFFLINE=1`` and an empty Keras cache, so
the ImageNet models fall back at once and no test depends on the network. A last cell
reports the kernel's peak memory (Binder gives about 2 GB). notebooks/pretrained.py,
the offline fallback, is tested on its own without any network either.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
# The quick start, one notebook per tutorial of shared/SEEDS.md (S0-S4), exercises, and "What does this channel see?".
EXPECTED = {
    "01_quickstart",
    "s0_mnist_first_layer",
    "s1_dlwp_three_visualisations",
    "s2_first_layer_rgb_kernels",
    "s3_weights_and_biases",
    "s4_one_channel_many_images",
    "classroom",
    "trust",  # issue 13: "Can I trust this map?"
    "channel",
}
CELL_TIMEOUT_S = 300
MB = 2**20
# Peak RSS of the kernel. Binder gives ~2 GB to the server and the kernel together.
PEAK_RSS_LIMIT_MB = {"01_quickstart": 1200}
DEFAULT_PEAK_RSS_LIMIT_MB = 1800
BINDER_KERNEL_MB = 2000
# Notebooks that use VGG16 where its ImageNet weights are at hand. VGG16 with its classifier
# (138M parameters) peaks over 2 GB in TensorFlow however it is built, so S1 and the channel
# notebook ask for more memory than Binder's before they build it (DESIGN_NOTES, "Memory on Binder").
IMAGENET_NOTEBOOKS = ("s4_one_channel_many_images",)
# What a user should never see in a cell: TensorFlow's and CUDA's start-up lines, Keras
# warning that a model was called with a list where it expects one tensor, retracing.
NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cuda|cpu_feature_guard"
    r"|structure of inputs doesn't match|triggered tf\.function retracing",
    re.IGNORECASE,
)

# VmHWM is the peak RSS of this process's own memory since it started. (getrusage's
# ru_maxrss would not do: Linux carries it over fork and exec, so the kernel would
# report the pytest worker's peak when that was higher.)
PEAK_RSS_CELL = """
import re
with open("/proc/self/status") as status:
    print("PEAK_RSS_KB", re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
"""

# Appended to classroom.ipynb: every check must refuse a wrong answer, not only accept the right one.
WRONG_ANSWERS_CELL = """
def _refused(check, *answer):
    try:
        check(*answer)
    except AssertionError:
        return True
    return False

assert _refused(check_conv2_params, params_answer - filters)  # the kernel without the biases
assert _refused(check_conv2_params, params_answer + 1)
assert _refused(check_horizontal_edge_channel, int(np.argmin(preference)))  # the most vertical channel
assert _refused(check_horizontal_edge_channel, 99)
assert _refused(check_dead_channels, dead_count + 1)
assert _refused(check_most_confused, CLASS_NAMES[0], CLASS_NAMES[0])  # not a mistake
assert _refused(check_least_confident, (least_confident + 1) % len(fresh_labels))
assert _refused(check_heatmap_on_shape, heat_fraction + 0.1)
assert _refused(check_conv1_number, 4, conv1_numbers[4] - float(biases[4]))  # the bias left out
assert _refused(check_conv1_number, 0, float((patch * kernels[..., 0]).sum() + biases[0]))  # the ReLU left out
assert _refused(check_conv1_number, 4, conv1_numbers[4] + 0.01)
print("WRONG ANSWERS REFUSED")
"""


def test_every_tutorial_has_a_notebook():
    assert {path.stem for path in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them (e.g. jupyter nbconvert --clear-output --inplace)"
    # The browser test and Binder open it with the default kernel, without a selection dialog.
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_starts_with_an_explanation(path):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "open with a title and what it shows"


def run_notebook(path, tmp_path, monkeypatch, **environment) -> tuple[str, float]:
    """Runs notebook ``path`` offline in a fresh kernel; what its cells printed, and the kernel's peak RSS in MB."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell

    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for name, value in {
        "CNNVIZ_OFFLINE": "1",
        "KERAS_HOME": str(tmp_path / "keras"),  # no cached ImageNet weights: the offline path, always
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        **environment,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # what a user's kernel gets

    notebook = nbformat.read(workdir / path.name, as_version=4)
    if path.stem == "classroom":
        notebook.cells.append(new_code_cell(WRONG_ANSWERS_CELL))
    notebook.cells.append(new_code_cell(PEAK_RSS_CELL))
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started

    printed = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    noisy = [
        f"cell {index}: {line}"
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        for line in (output.get("text", "") + output.get("data", {}).get("text/plain", "")).splitlines()
        if NOISE.search(line)
    ]
    assert not noisy, f"{path.name} shows start-up lines or warnings: {noisy[:5]}"
    peak_mb = int(re.search(r"PEAK_RSS_KB (\d+)", printed).group(1)) * 1024 / MB
    print(f"{path.name}: {seconds:.0f} s, kernel peak RSS {peak_mb:.0f} MB")
    return printed, peak_mb


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_runs_top_to_bottom_offline(path, tmp_path, monkeypatch):
    printed, peak_mb = run_notebook(path, tmp_path, monkeypatch)
    assert "Shown:" in printed or path.stem in ("01_quickstart", "s0_mnist_first_layer", "classroom")
    if path.stem == "classroom":
        assert "WRONG ANSWERS REFUSED" in printed
    limit = PEAK_RSS_LIMIT_MB.get(path.stem, DEFAULT_PEAK_RSS_LIMIT_MB)
    assert peak_mb < limit, f"{path.name} peaked at {peak_mb:.0f} MB, over {limit} MB"


@pytest.mark.slow
@pytest.mark.parametrize("stem", IMAGENET_NOTEBOOKS)
def test_with_imagenet_models_the_kernel_stays_under_binders_2_gb(stem, tmp_path, monkeypatch):
    """The path of a user who has the ImageNet weights: weights=None stands in for them (the
    same layers and memory), and a generated photo for the book's elephant."""
    photo = tmp_path / "keras" / "datasets" / "african_elephant.jpg"
    photo.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(photo)
    printed, peak_mb = run_notebook(NOTEBOOKS_DIR / f"{stem}.ipynb", tmp_path, monkeypatch, CNNVIZ_STAND_IN_WEIGHTS="1")
    assert "weights=None stands in" in printed and "with ImageNet weights" in printed, printed[-2000:]
    assert peak_mb < BINDER_KERNEL_MB, f"{stem} peaked at {peak_mb:.0f} MB with ImageNet-size models, over Binder's {BINDER_KERNEL_MB} MB"


# -- notebooks/pretrained.py: ImageNet weights when they can be had, quickly None otherwise


@pytest.fixture
def pretrained(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("cnnviz_notebooks_pretrained", NOTEBOOKS_DIR / "pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(module, "keras_cache_dirs", lambda: [tmp_path / "keras"])
    return module


class FakeApplication:
    """Stands in for keras.applications.VGG16: records how it was called."""

    def __init__(self, error: Exception | None = None):
        self.calls, self.error, self.socket_timeouts = [], error, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        self.socket_timeouts.append(socket.getdefaulttimeout())
        if self.error is not None:
            raise self.error
        return "model"


def _no_network(*args, **kwargs):
    raise AssertionError("tried to open a connection")


def test_offline_returns_none_without_touching_the_network(pretrained, monkeypatch, capsys):
    application = FakeApplication()
    monkeypatch.setattr(pretrained.keras.applications, "VGG16", application)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setenv("CNNVIZ_OFFLINE", "1")
    assert pretrained.imagenet_model("VGG16", include_top=False) is None
    assert application.calls == []
    assert "CNNVIZ_OFFLINE" in capsys.readouterr().out
    assert pretrained.download("photo.jpg", "https://example.org/photo.jpg") is None


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_offline_switch_values_that_mean_online(pretrained, monkeypatch, value):
    monkeypatch.setenv("CNNVIZ_OFFLINE", value)
    assert not pretrained.offline()


def test_cached_weights_are_used_even_offline(pretrained, monkeypatch, tmp_path):
    weights = tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    application = FakeApplication()
    monkeypatch.setattr(pretrained.keras.applications, "VGG16", application)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setenv("CNNVIZ_OFFLINE", "1")
    assert pretrained.imagenet_model("VGG16", include_top=False) == "model"
    assert application.calls == [{"weights": "imagenet", "include_top": False}]


def test_stand_in_weights_build_the_same_model_untrained_without_the_network(pretrained, monkeypatch, capsys):
    application = FakeApplication()
    monkeypatch.setattr(pretrained.keras.applications, "VGG16", application)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setenv("CNNVIZ_OFFLINE", "1")
    monkeypatch.setenv("CNNVIZ_STAND_IN_WEIGHTS", "1")
    assert pretrained.imagenet_model("VGG16", include_top=False) == "model"
    assert application.calls == [{"weights": None, "include_top": False}]
    assert "stands in" in capsys.readouterr().out
    monkeypatch.setenv("CNNVIZ_STAND_IN_WEIGHTS", "0")
    assert pretrained.imagenet_model("VGG16", include_top=False) is None  # offline again


def test_a_model_that_needs_more_memory_than_the_machine_allows_is_not_built(pretrained, monkeypatch, capsys):
    application = FakeApplication()
    monkeypatch.setattr(pretrained.keras.applications, "VGG16", application)
    monkeypatch.setenv("CNNVIZ_STAND_IN_WEIGHTS", "1")
    monkeypatch.setattr(pretrained, "memory_limit_mb", lambda: 2048)  # Binder's
    assert pretrained.imagenet_model("VGG16", needs_mb=3000) is None
    assert application.calls == [] and "allows 2048 MB" in capsys.readouterr().out
    assert pretrained.imagenet_model("VGG16", needs_mb=2000) == "model"
    monkeypatch.setattr(pretrained, "memory_limit_mb", lambda: None)  # no limit known
    assert pretrained.imagenet_model("VGG16", needs_mb=3000) == "model"


def test_unreachable_host_gives_up_within_the_connect_timeout(pretrained, monkeypatch):
    def hanging_connection(address, timeout=None):
        time.sleep(timeout)  # a firewall that drops packets: nothing until the timeout
        raise socket.timeout("timed out")

    application = FakeApplication()
    monkeypatch.setattr(pretrained.keras.applications, "ResNet50", application)
    monkeypatch.setattr(socket, "create_connection", hanging_connection)
    monkeypatch.setattr(pretrained, "CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.delenv("CNNVIZ_OFFLINE", raising=False)
    started = time.monotonic()
    assert pretrained.imagenet_model("ResNet50") is None
    assert time.monotonic() - started < 3
    assert application.calls == []


def test_a_failing_download_gives_none_and_restores_the_socket_timeout(pretrained, monkeypatch, capsys):
    application = FakeApplication(Exception("URL fetch failure on https://storage.googleapis.com/…: None"))
    monkeypatch.setattr(pretrained.keras.applications, "VGG16", application)
    monkeypatch.setattr(pretrained, "reachable", lambda url, timeout=None: True)
    monkeypatch.delenv("CNNVIZ_OFFLINE", raising=False)
    before = socket.getdefaulttimeout()
    assert pretrained.imagenet_model("VGG16") is None
    assert application.socket_timeouts == [pretrained.READ_TIMEOUT_S]  # reads cannot hang
    assert socket.getdefaulttimeout() == before
    assert "URL fetch failure" in capsys.readouterr().out


def test_unknown_application_names_the_known_ones(pretrained):
    with pytest.raises(ValueError, match="VGG16, VGG19, ResNet50"):
        pretrained.weights_filename("MobileNet")


@pytest.mark.skipif(os.environ.get("CNNVIZ_NETWORK_TESTS") != "1", reason="set CNNVIZ_NETWORK_TESTS=1 to time a real attempt")
def test_a_real_attempt_without_network_is_quick(pretrained, monkeypatch):
    monkeypatch.delenv("CNNVIZ_OFFLINE", raising=False)
    started = time.monotonic()
    pretrained.imagenet_model("VGG16", include_top=False)
    assert time.monotonic() - started < pretrained.CONNECT_TIMEOUT_S + 5
