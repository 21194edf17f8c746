"""The report in a real browser: headless Chromium (Debian's `chromium` package).

How it works, with no extra Python dependency:

1. the sample report is built from fabricated results (tests/report_samples.py);
2. a test-only copy of the page gets a small inline script at the top of <head>
   (and a CSP that allows it): it records console.error/warn calls, uncaught
   errors, resource load errors and CSP violations (the page's own CSP forbids
   every request except data: images), waits for every <img> to load and
   `decode()`, lists `performance` resource entries (any is a request), and
   writes a JSON verdict into the DOM;
3. `chromium --dump-dom` prints that DOM; the test parses the verdict, and scans
   Chromium's stderr (`--enable-logging=stderr --v=0`) for console lines;
4. `chromium --screenshot` then photographs the untouched page at full height;
5. at a 1,400 px wide window the probe also measures the layout, every <details> open:
   the document must not be wider than the window, and no verdict card wider than itself
   (a wide table scrolls in its own box; a machine label stays on one line, shortened if
   need be); a cell's command wraps inside the window, even in a scroll box.

If chromium is missing the tests skip, or fail where XFBENCH_REQUIRE_ALL=1 (CI installs it).
Set XFBENCH_SCREENSHOT=path.png to keep the screenshot.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_samples  # noqa: E402  (test fixtures)
import prerequisites  # noqa: E402

from reports.build import build_report  # noqa: E402

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--enable-logging=stderr",
    "--v=0",
]

PROBE = r"""
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<script>
(function () {
  var V = {console: [], errors: [], failed: [], csp: [], images: [], resources: [], height: 0};
  ["error", "warn"].forEach(function (level) {
    var orig = console[level];
    console[level] = function () { V.console.push(level + ": " + Array.prototype.join.call(arguments, " ")); return orig.apply(console, arguments); };
  });
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { V.failed.push(String(t.src || t.href).slice(0, 120)); }
    else { V.errors.push(String(e.message)); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { V.errors.push("unhandled rejection: " + e.reason); });
  document.addEventListener("securitypolicyviolation", function (e) { V.csp.push(e.violatedDirective + " " + String(e.blockedURI).slice(0, 120)); });
  function layout() {
    Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) { d.open = true; });
    var doc = document.documentElement, L = {innerWidth: window.innerWidth, scrollWidth: doc.scrollWidth,
                                             clientWidth: doc.clientWidth, cards: [], wrappedTags: [], wide: [],
                                             commands: 0, wideCommands: []};
    Array.prototype.forEach.call(document.querySelectorAll(".answer"), function (card, i) {
      var box = card.getBoundingClientRect(), out = [];
      Array.prototype.forEach.call(card.querySelectorAll("*"), function (el) {
        var r = el.getBoundingClientRect();
        if (r.width && (r.right > box.right + 1 || r.left < box.left - 1)) { out.push(el.tagName + "." + el.className); }
      });
      L.cards.push({i: i, scrollWidth: card.scrollWidth, clientWidth: card.clientWidth, left: box.left,
                    right: box.right, outside: out.slice(0, 5)});
    });
    Array.prototype.forEach.call(document.querySelectorAll(".answer .mtag"), function (t) {
      if (t.getClientRects().length > 1) { L.wrappedTags.push(t.textContent); }
    });
    Array.prototype.forEach.call(document.querySelectorAll("main *"), function (el) {
      var r = el.getBoundingClientRect();
      if (r.right > window.innerWidth + 1 && !el.closest(".scroll")) { L.wide.push(el.tagName + "." + el.className); }
    });
    L.wide = L.wide.slice(0, 10);
    Array.prototype.forEach.call(document.querySelectorAll("code.cmd"), function (c) {
      L.commands += 1;
      if (c.getBoundingClientRect().right > window.innerWidth + 1 || c.scrollWidth > c.clientWidth + 1) {
        L.wideCommands.push(c.textContent.slice(0, 80));
      }
    });
    return L;
  }
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    Promise.all(imgs.map(function (img) {
      var rec = {alt: img.alt.slice(0, 80), scheme: img.src.split(":")[0]};
      return img.decode().then(function () { rec.ok = img.complete && img.naturalWidth > 0 && img.naturalHeight > 0; rec.w = img.naturalWidth; rec.h = img.naturalHeight; },
                               function (err) { rec.ok = false; rec.error = String(err); })
        .then(function () { V.images.push(rec); });
    })).then(function () {
      V.resources = performance.getEntriesByType("resource").map(function (r) { return r.name.slice(0, 120); });
      V.height = Math.ceil(document.documentElement.scrollHeight);
      V.sections = Array.prototype.map.call(document.querySelectorAll("section[id]"), function (s) { return s.id; });
      V.layout = layout();
      var pre = document.createElement("pre");
      pre.id = "xf-verdict";
      pre.textContent = "XFV" + JSON.stringify(V) + "XFV";
      document.body.appendChild(pre);
    });
  });
})();
</script>
"""


@pytest.fixture(scope="module")
def chromium():
    return prerequisites.found("chromium")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    s = report_samples.everything(root)
    r = report_samples.replicates(root)
    out = build_report(
        [s["cpu_run"], s["partial_run"], s["gpu_json"], s["corrupt"], r["replicated_run"], r["single_replicate_run"]],
        root / "site" / "index.html",
        history_dir=s["history"],
        include_published=False,
        gate_file=s["gate"],
    )
    return out


def _run(chromium: str, profile: Path, args: list[str], timeout: int = 60) -> subprocess.CompletedProcess:
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _console_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


def _probe(chromium: str, page: Path, profile: Path, width: int) -> tuple[dict, subprocess.CompletedProcess]:
    """Load a test-only copy of the page with the probe in a `width` px wide window; return its verdict."""
    html = page.read_text(encoding="utf-8")
    # test-only copy: swap the page's CSP for one that also allows the probe script
    probed = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html, count=1)
    probed = probed.replace("<head>", "<head>" + PROBE, 1)
    probe_page = page.with_name("probe.html")
    probe_page.write_text(probed, encoding="utf-8")
    r = _run(chromium, profile,
             ["--dump-dom", "--virtual-time-budget=10000", f"--window-size={width},2000", probe_page.as_uri()])
    m = re.search(r'<pre id="xf-verdict">XFV(.*?)XFV</pre>', r.stdout, re.S)
    assert m, f"the probe wrote no verdict (chromium rc={r.returncode}); stderr tail:\n{r.stderr[-2000:]}"
    return json.loads(html_lib.unescape(m.group(1))), r


def test_page_in_headless_chromium(chromium, page, tmp_path):
    v, r = _probe(chromium, page, tmp_path / "profile1", 1280)

    assert v["images"], "the page has no image"
    bad = [i for i in v["images"] if not i.get("ok")]
    assert not bad, f"images that did not decode: {bad}"
    assert all(i["scheme"] == "data" for i in v["images"]), "every image must be embedded as a data: URI"
    assert not v["failed"], f"failed loads: {v['failed']}"
    assert not v["csp"], f"requests blocked by the page's CSP (the page tried to load something): {v['csp']}"
    assert not v["resources"], f"the page requested resources: {v['resources']}"
    assert not v["console"], f"console errors/warnings: {v['console']}"
    assert not v["errors"], f"script errors: {v['errors']}"
    assert not _console_lines(r.stderr), f"console output in chromium's log: {_console_lines(r.stderr)}"
    assert {"verdict", "identity", "plots", "data", "environment", "problems"} <= set(v["sections"])

    # the screenshot: the untouched page, full height (capped)
    height = max(800, min(int(v["height"]) + 20, 30000))
    shot = tmp_path / "report.png"
    r2 = _run(chromium, tmp_path / "profile2",
              [f"--screenshot={shot}", f"--window-size=1280,{height}", "--virtual-time-budget=5000", page.as_uri()])
    assert shot.is_file() and shot.stat().st_size > 50_000, f"no screenshot (rc={r2.returncode}): {r2.stderr[-1500:]}"
    assert not _console_lines(r2.stderr), f"console output while rendering the real page: {_console_lines(r2.stderr)}"
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("XFBENCH_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
    print(f"screenshot: {keep or shot} (1280×{height})")


def test_verdict_fits_a_1400px_window(chromium, page, tmp_path):
    v, _ = _probe(chromium, page, tmp_path / "profile", 1400)
    L = v["layout"]
    assert L["innerWidth"] == 1400, L["innerWidth"]
    assert L["scrollWidth"] <= L["clientWidth"], f"the page is wider than the window: {L['scrollWidth']} > {L['clientWidth']}"
    assert not L["wide"], f"elements outside a scroll box reach past the window: {L['wide']}"
    assert len(L["cards"]) >= 4
    for card in L["cards"]:
        assert card["scrollWidth"] <= card["clientWidth"], f"verdict card {card['i']} overflows sideways: {card}"
        assert not card["outside"], f"verdict card {card['i']} has content outside it: {card}"
        assert card["right"] <= L["innerWidth"], f"verdict card {card['i']} reaches past the window: {card}"
    # the cards wrap in a grid: more than one per row, and no row wider than the window
    assert len({round(c["left"]) for c in L["cards"]}) >= 2
    assert not L["wrappedTags"], f"machine labels wrapped mid-card: {L['wrappedTags']}"
    assert L["commands"], "no cell's command on the page"
    assert not L["wideCommands"], f"commands reaching past the window: {L['wideCommands']}"
