"""ImageNet models and files for the tutorial notebooks, with a quick offline way out.

The tutorials S1, S2 and S4 use VGG16 and ResNet50 with ImageNet weights, which Keras
downloads (58 to 100 MB) on first use into ``~/.keras/models``. Without a network
(CI, a firewalled classroom, a laptop on a train) a notebook must still run, so:

- :func:`imagenet_model` gives the model with ImageNet weights when the weights file
  is cached or can be downloaded, and ``None`` otherwise; the notebook then shows
  the bundled demo model or an untrained network, and says which;
- ``CNNVIZ_OFFLINE=1`` skips every download attempt (the tests set it);
- ``CNNVIZ_STAND_IN_WEIGHTS=1`` makes :func:`imagenet_model` build the model with
  ``weights=None`` instead: the same layers and memory as with ImageNet weights, so
  a test can measure the path a user with the weights takes, offline;
- a download is only tried after a connection to the host opened within
  ``CONNECT_TIMEOUT_S`` seconds, and every read has a ``READ_TIMEOUT_S`` timeout,
  so a firewall that drops packets costs seconds, not a hang. (With no DNS, as on
  the CI machines, Keras' own attempt fails in about a second.)
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import keras

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
WEIGHTS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"
# The keras.applications models the tutorials use and the stem of their weight files.
WEIGHT_FILE_STEMS = {"VGG16": "vgg16", "VGG19": "vgg19", "ResNet50": "resnet50"}


def offline() -> bool:
    """Whether ``CNNVIZ_OFFLINE`` asks to skip downloads (any value but '', 0, false, no)."""
    return _flag("CNNVIZ_OFFLINE")


def stand_in_weights() -> bool:
    """Whether ``CNNVIZ_STAND_IN_WEIGHTS`` asks for untrained models in place of ImageNet ones."""
    return _flag("CNNVIZ_STAND_IN_WEIGHTS")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def keras_cache_dirs() -> list[Path]:
    """Where ``keras.utils.get_file`` keeps downloads: ``$KERAS_HOME`` or ``~/.keras``,
    and ``/tmp/.keras`` when the first is not writable."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    return [home, Path("/tmp/.keras")]


def cached_file(subdir: str, filename: str) -> Path | None:
    """The cached copy of a Keras download, if there is one."""
    for directory in keras_cache_dirs():
        path = directory / subdir / filename
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def weights_filename(name: str, include_top: bool = True) -> str:
    """The file Keras caches the ImageNet weights of application ``name`` in."""
    if name not in WEIGHT_FILE_STEMS:
        raise ValueError(f"No known weights file for {name!r}; use one of {', '.join(WEIGHT_FILE_STEMS)}.")
    return f"{WEIGHT_FILE_STEMS[name]}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"


def reachable(url: str, timeout: float | None = None) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds
    (default ``CONNECT_TIMEOUT_S``).

    Runs in a daemon thread joined with a deadline, because name resolution is not
    covered by socket timeouts and can stall for much longer on a broken resolver.
    """
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    parts = urlsplit(url)
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    opened = []

    def connect():
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(opened)


def _download_blocker(what: str, cached: bool, origin: str) -> str | None:
    """Why ``what`` cannot be had right now, or None when it can be tried."""
    if cached:
        return None
    if offline():
        return f"{what}: not cached, and CNNVIZ_OFFLINE is set, so nothing is downloaded"
    if not reachable(origin):
        return f"{what}: not cached, and {urlsplit(origin).hostname} cannot be reached"
    return None


class _ReadTimeout:
    """Every socket opened inside the block times out after ``seconds`` without data."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        self.previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.seconds)

    def __exit__(self, *exc):
        socket.setdefaulttimeout(self.previous)


def imagenet_model(name: str, include_top: bool = True, needs_mb: int | None = None, **kwargs):
    """``keras.applications.<name>(weights="imagenet", include_top=..., **kwargs)``, or None.

    None (with a printed reason) when the weights are neither cached nor downloadable, or
    when the machine's memory limit is under ``needs_mb`` (Binder gives 2 GB); the caller
    then shows something else and says so.
    """
    builder = getattr(keras.applications, name)
    filename = weights_filename(name, include_top)
    limit_mb = memory_limit_mb()
    if needs_mb is not None and limit_mb is not None and limit_mb < needs_mb:
        print(f"{name} needs about {needs_mb} MB here, and this machine allows {limit_mb} MB.")
        return None
    if stand_in_weights():
        print(f"{name}: weights=None stands in for the ImageNet weights (CNNVIZ_STAND_IN_WEIGHTS is set).")
        return builder(weights=None, include_top=include_top, **kwargs)
    return _fetched(
        f"ImageNet weights of {name} ({filename})",
        cached_file("models", filename) is not None,
        WEIGHTS_ORIGIN,
        lambda: builder(weights="imagenet", include_top=include_top, **kwargs),
        f"Could not load the ImageNet weights of {name}",
    )


def memory_limit_mb() -> int | None:
    """The container's memory limit in MB (cgroup v2, then v1), or None where there is none."""
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 writes a huge number for "no limit", v2 "max"
            return int(text) // 2**20
    return None


def download(filename: str, origin: str) -> Path | None:
    """``keras.utils.get_file(filename, origin)`` (cached in ``~/.keras/datasets``), or None."""
    return _fetched(
        filename,
        cached_file("datasets", filename) is not None,
        origin,
        lambda: Path(keras.utils.get_file(filename, origin)),
        f"Could not download {filename}",
    )


def _fetched(what: str, cached: bool, origin: str, fetch, failure: str):
    """``fetch()`` when ``what`` is cached or ``origin`` reachable, within the read timeout; else None, said why."""
    blocker = _download_blocker(what, cached, origin)
    if blocker:
        print(f"{blocker}.")
        return None
    try:
        with _ReadTimeout(READ_TIMEOUT_S):
            return fetch()
    except Exception as error:  # noqa: BLE001 - get_file raises a bare Exception("URL fetch failure …")
        print(f"{failure}: {error}")
        return None
