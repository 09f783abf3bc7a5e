"""Screenshots of the HTML report for the docs (docs/img/), made by headless Chromium.

    python tools/screenshots.py        # runs the demo (real and tolerated differences), then shoots its page

.ci/run makes them before it builds the docs site, so the site shows the report as the code draws it.
Needs `chromium` on PATH (.ci/run installs Debian's package).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
SHOTS = {  # file: (the page's anchor, window size)
    "report-verdict.png": ("", "1280,1100"),
    "report-differences.png": ("differs", "1280,900"),
    "report-tolerated.png": ("tolerated", "1280,700"),
}


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        demo = [sys.executable, "-m", "shim", "demo", "--calls", "1500", "--seed", "7", "--html", str(page)]
        done = subprocess.run(demo, cwd=folder, capture_output=True, text=True, timeout=300, check=False)
        if not page.is_file():
            print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
            return 1
        OUT.mkdir(exist_ok=True)
        text = page.read_text(encoding="utf-8")
        for name, (anchor, size) in SHOTS.items():
            shown = page
            if anchor:  # the page from that section on (a headless shot does not scroll to an anchor)
                body = text.index("<body>") + len("<body>")
                shown = Path(folder) / f"{anchor}.html"
                shown.write_text(text[:body] + text[text.index(f'<h2 id="{anchor}">') :], encoding="utf-8")
            url = shown.as_uri()
            shot = [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={Path(folder) / 'profile'}",
                f"--window-size={size}",
                f"--screenshot={OUT / name}",
                url,
            ]
            taken = subprocess.run(shot, capture_output=True, text=True, timeout=120, check=False)
            if taken.returncode != 0 or not (OUT / name).is_file():
                print(taken.stderr[-2000:], file=sys.stderr)
                return 1
            print(f"wrote {(OUT / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
