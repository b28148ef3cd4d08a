"""Render a report's HTML in headless Chromium and save a screenshot (a check that it displays).

    .venv/bin/python scripts/render_report.py outputs/.../report.html report.png

Exits 0 with a message when no chromium is installed (Debian: apt-get install chromium).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


# Flags for a closed network: without the background-networking ones Chromium keeps trying to
# reach Google's hosts (the machine's notes).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]


def _browser() -> str:
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    return browser


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 4000) -> Path:
    subprocess.run([_browser(), *FLAGS, f"--screenshot={png.resolve()}",
                    f"--window-size={width},{height}", html.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    return png


def rendered_dom(html: Path) -> str:
    """The page's DOM after Chromium has parsed and laid it out (--dump-dom)."""
    proc = subprocess.run([_browser(), *FLAGS, "--dump-dom", html.resolve().as_uri()],
                          check=True, capture_output=True, text=True, timeout=120)
    return proc.stdout


if __name__ == "__main__":
    if find_chromium() is None:
        print("no chromium installed; skipping the render check")
        sys.exit(0)
    out = screenshot(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "report.png"))
    print(f"wrote {out}")
