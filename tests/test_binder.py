"""binder/ gives repo2docker what pyproject.toml asks for, and the README's badge opens the quick start."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
# Binder has no GPU: the CPU-only build of a package may stand in for it.
STAND_INS = {"tensorflow": "tensorflow-cpu"}
BADGE_URL = "https://mybinder.org/v2/gh/cnnviz-widgets/cnnviz_widgets/HEAD?urlpath=lab/tree/notebooks/01_quickstart.ipynb"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _binder_requirements() -> dict[str, Requirement]:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    requirements = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    by_name = {canonicalize_name(r.name): r for r in requirements}
    assert len(by_name) == len(requirements), "a package is listed twice in binder/requirements.txt"
    return by_name


def _runtime_dependencies() -> list[Requirement]:
    return [Requirement(text) for text in _pyproject()["project"]["dependencies"]]


@pytest.mark.parametrize("dependency", _runtime_dependencies(), ids=str)
def test_every_runtime_dependency_is_in_binder_requirements(dependency):
    binder = _binder_requirements()
    name = canonicalize_name(dependency.name)
    listed = binder.get(name) or binder.get(STAND_INS.get(name, ""))
    assert listed is not None, f"binder/requirements.txt lacks {dependency} (from pyproject.toml)"
    assert listed.specifier == dependency.specifier, (
        f"binder/requirements.txt has {listed}, pyproject.toml has {dependency}: make the versions agree"
    )
    assert not (name in binder and STAND_INS.get(name) in binder), f"list {name} or {STAND_INS[name]}, not both"


def test_binder_installs_nothing_pyproject_does_not_know():
    known = {canonicalize_name(r.name) for r in _runtime_dependencies()}
    known |= {canonicalize_name(STAND_INS.get(name, name)) for name in known}
    for extra in ("lab",):
        known |= {canonicalize_name(Requirement(text).name) for text in _pyproject()["project"]["optional-dependencies"][extra]}
    unknown = set(_binder_requirements()) - known
    assert not unknown, f"binder/requirements.txt installs {sorted(unknown)}, which pyproject.toml does not list"


def test_binder_has_jupyterlab_4():
    lab = _binder_requirements().get("jupyterlab")
    assert lab is not None and "4.0" in lab.specifier and "3.6" not in lab.specifier


def test_post_build_installs_the_package_without_pulling_dependencies_again():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable (git update-index --chmod=+x)"
    text = post_build.read_text()
    assert text.startswith("#!/bin/bash")
    # --no-deps: pyproject's "tensorflow" would otherwise be installed next to tensorflow-cpu.
    assert re.search(r"pip install (--no-cache-dir )?--no-deps (-e )?\.$", text, re.MULTILINE), text


def test_runtime_python_satisfies_requires_python():
    version = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", version), version
    assert version.removeprefix("python-") + ".0" in SpecifierSet(_pyproject()["project"]["requires-python"])


def test_readme_badge_opens_the_quickstart_in_jupyterlab():
    readme = (ROOT / "README.md").read_text()
    assert f"[![Binder](https://mybinder.org/badge_logo.svg)]({BADGE_URL})" in readme
    assert (ROOT / BADGE_URL.split("urlpath=lab/tree/")[1]).is_file()


def test_readme_still_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.DOTALL)
    assert blocks[0].endswith("jupyter lab notebooks/01_quickstart.ipynb"), blocks[0]
    assert blocks[1].endswith("python -m pytest -n 2"), blocks[1]
    assert readme.index(blocks[1]) < readme.index("mybinder.org")


def test_readme_leads_with_what_it_is_and_a_screenshot():
    readme = (ROOT / "README.md").read_text()
    screenshot = re.search(r"!\[[^\]]+\]\((docs/[\w-]+\.png)\)", readme)
    assert screenshot and readme.index(screenshot.group(0)) < readme.index("```bash")
    path = ROOT / screenshot.group(1)
    assert path.is_file() and path.stat().st_size < 300_000


def test_overrides_disable_the_installed_arrow_key_bindings_and_keep_them_off_widgets():
    """A disabled entry that no longer matches a default binding would leave Notebook 7's slider keyless."""
    import json
    import sys

    schema = Path(sys.prefix) / "share/jupyter/lab/schemas/@jupyterlab/notebook-extension/tracker.json"
    if not schema.exists():
        pytest.skip(f"no JupyterLab schemas under {schema.parent}")
    defaults = json.loads(schema.read_text())["jupyter.lab.shortcuts"]
    plain_arrows = (["ArrowUp"], ["ArrowDown"], ["ArrowLeft"], ["ArrowRight"])
    command_mode = {(s["command"], tuple(s["keys"]), s["selector"]) for s in defaults if s["keys"] in plain_arrows}
    shortcuts = json.loads((BINDER / "overrides.json").read_text())["@jupyterlab/shortcuts-extension:shortcuts"]["shortcuts"]
    disabled = [(s["command"], tuple(s["keys"]), s["selector"]) for s in shortcuts if s.get("disabled")]
    assert len(command_mode) == 4 and set(disabled) == command_mode
    readded = {(s["command"], tuple(s["keys"]), s["selector"]) for s in shortcuts if not s.get("disabled")}
    assert readded == {(command, keys, f"{selector}:not(.jupyter-widgets *)") for command, keys, selector in disabled}
    assert "cp binder/overrides.json" in (BINDER / "postBuild").read_text()
