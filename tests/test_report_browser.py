"""A real browser opens report.html from disk: headless Chromium (Debian package ``chromium``,
installed by .ci/run) dumps the DOM and takes a screenshot. The test checks the table is there
and every plot image decoded (naturalWidth > 0), with every network host unresolvable, so the
page needs nothing from outside the file. The test installs nothing itself."""

import re
import shutil
import subprocess

import pytest

from test_report import RECORDS

from adaptlab.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.setAttribute('data-rows', document.querySelectorAll('#results tbody tr').length);
});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_opens_in_chromium(tmp_path):
    write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    html = (tmp_path / "report.html").read_text()
    assert not re.search(r"(src|href)=\"https?:", html), "the report must not reference the network"
    probe = tmp_path / "probe.html"            # a copy with a probe script; report.html has none
    probe.write_text(html.replace("</body>", PROBE))
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-1000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body))
    assert attrs.get("rows") == "6", body           # one row per run in RECORDS, the failed one too
    assert int(attrs["images"]) == 5 and attrs["decoded"] == attrs["images"], body
    shot = tmp_path / "shot.png"
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                        "--window-size=1280,2400", (tmp_path / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG"
