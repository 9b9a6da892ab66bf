"""The demo's index.html in a real browser: headless Chromium loads it, every panel image
decodes at its file's size, and a screenshot shows the panels (skipped without Chromium)."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from saliency_jax.app.demo import run_demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
              pytest.mark.slow]  # the demo, then a browser

# Appended to a copy of the page: after every image has settled, report each one's decoded size.
CHECK = """<script>
window.addEventListener('load', () => {
  const r = [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);
  const pre = document.createElement('pre'); pre.id = 'result'; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def test_demo_gallery_loads_every_panel_in_chromium(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out, n=3, window=32, stride=16, methods="occlusion,crop,deconvnet")
    page = (out / "index.html").read_text()
    (out / "check.html").write_text(page.replace("</body>", CHECK + "</body>"))

    dom = _chromium(tmp_path, "--dump-dom", (out / "check.html").as_uri())
    match = re.search(r'<pre id="result">(.*?)</pre>', dom.stdout, re.S)
    assert match, dom.stderr[-2000:]
    loaded = json.loads(match.group(1).replace("&quot;", '"'))
    assert [src for src, *_ in loaded] == [f"{r['image']}.png" for r in summary["images"]]
    for src, complete, width, height in loaded:
        assert complete and width > 0, f"{src} did not load"
        with Image.open(out / src) as im:
            assert (width, height) == im.size  # decoded, at the file's size

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", (out / "index.html").as_uri())
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    # the panels are colourful: thousands of distinct colours, not a blank or broken-image page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2000
