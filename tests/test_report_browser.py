"""A real browser opens report.html from disk: headless Chromium (Debian package ``chromium``,
installed by .ci/run) dumps the DOM and takes a screenshot. The test checks the table is there
and every plot image decoded (naturalWidth > 0), with every network host unresolvable, so the
page needs nothing from outside the file; and, at viewport widths 1400 and 800 px, that the page
never scrolls sideways (a wide table scrolls inside its own box), every plot has alt/title text
and is shown at (nearly) its natural size, and a one-seed run's std shows "–". Screenshots at both
widths go to tmp_path/screens (and to $ADAPTLAB_SCREENS when set, to look at). The test installs
nothing itself."""

import html as H
import json
import os
import re
import shutil
import subprocess

import pytest

from test_report import RECORDS

from adaptlab.report import COLUMNS, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.setAttribute('data-rows', document.querySelectorAll('#results tbody tr').length);
  const std = COLUMNS.indexOf('std'), run = COLUMNS.indexOf('run');
  const cells = [...document.querySelectorAll('#results tbody tr')].map(tr => [...tr.cells].map(td => td.textContent));
  document.body.setAttribute('data-probe', JSON.stringify({
    inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
    imgs: imgs.map(i => ({alt: i.alt, title: i.title, natural: i.naturalWidth,
                         shown: i.getBoundingClientRect().width})),
    std: Object.fromEntries(cells.map(c => [c[run], c[std]])),
  }));
});
</script></body>"""


def _chromium(profile, *args):
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    return r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_opens_in_chromium(tmp_path):
    write_report(tmp_path, RECORDS, {"task": "reviews", "model": "m", "seeds": 2, "limit": 100})
    html = (tmp_path / "report.html").read_text()
    assert not re.search(r"(src|href)=\"https?:", html), "the report must not reference the network"
    probe = tmp_path / "probe.html"            # a copy with a probe script; report.html has none
    probe.write_text(html.replace("</body>", PROBE.replace("COLUMNS", json.dumps(COLUMNS))))
    profile = tmp_path / "profile"
    screens = tmp_path / "screens"
    screens.mkdir()
    for width in (1400, 800):
        dom = _chromium(profile, f"--window-size={width},1000", "--dump-dom", probe.as_uri())
        body = re.search(r"<body([^>]*)>", dom).group(1)
        attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body))
        assert attrs.get("rows") == "6", body           # one row per run in RECORDS, the failed one too
        assert int(attrs["images"]) == 5 and attrs["decoded"] == attrs["images"], body
        got = json.loads(H.unescape(re.search(r'data-probe="([^"]*)"', body).group(1)))
        assert got["inner"] == width, got["inner"]
        assert got["scroll"] <= got["inner"], f"{width} px: the page scrolls sideways ({got['scroll']} px)"
        for img in got["imgs"]:
            assert img["alt"] and img["title"], img
            assert img["natural"] <= 1.3 * img["shown"], f"{width} px: a plot shown at {img['shown']:.0f} px " \
                                                         f"of its {img['natural']} px"
        assert got["std"]["zero-shot"] == "–" and got["std"]["lora"] == "0.0141", got["std"]   # 1 seed; 2 seeds
        shot = screens / f"report-{width}.png"
        _chromium(profile, f"--screenshot={shot}", f"--window-size={width},2600", (tmp_path / "report.html").as_uri())
        assert shot.read_bytes()[:4] == b"\x89PNG"
        if os.environ.get("ADAPTLAB_SCREENS"):
            shutil.copy(shot, os.path.join(os.environ["ADAPTLAB_SCREENS"], shot.name))
