"""Takes a screenshot of an HTML page with headless Chromium, for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["chromium", "colour_share", "screenshot"]


def chromium() -> str | None:
    """The Chromium binary on this machine, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, out: Path, width: int = 1200, height: int = 4000):
    """Renders `page` headless and writes a PNG of it to `out`."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("No Chromium on PATH.")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                # The machine has no network: no background connections.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "HOME": profile},
        )
    return out


def colour_share(png: Path, colour: str, tolerance: int = 24) -> float:
    """The share of the image's pixels within `tolerance` of `colour`."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    target = np.array(
        [int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16
    )
    close = np.all(np.abs(rgb - target) <= tolerance, axis=-1)
    return float(close.mean())
