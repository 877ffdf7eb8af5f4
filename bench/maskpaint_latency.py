"""Stroke-to-boxes latency of the mask painter (dnnod.viz.maskpaint, chapter 6) in headless Chromium:
`python bench/maskpaint_latency.py [--strokes 40]`.

The painter of chapter 6 (a 192 × 192 shapes test image, the shipped network's masks, its one aspect
ratio, stride 5; and the same with the package's 10 default aspect ratios, 10x the candidates, as
for photos) is written to an offline page (the book's vendored widget JavaScript, file://)
and opened in Debian's chromium through Playwright. Each stroke is one pointerdown + pointerup on
a mask canvas, dispatched inside the page; the time is from the pointerdown to the return of the
pointerup handler, which recomputes the boxes (Eq. 2 threshold, Eq. 3, NMS, top k) and redraws the
image, the five masks and the table. Rows: paint strokes on the full mask starting from the
network's masks and from the ground truth, erase strokes on all five masks, and the Eq. 2 + Eq. 3
+ NMS computation alone (the `computeMs` the widget records). Target: <= 50 ms per stroke.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from maskpaint_page import CHROMIUM, chapter6_painter, launch, write_page  # noqa: E402

STROKES_JS = """([mask, n, value]) => {
  const c = document.querySelector(`canvas[data-mask=${mask}]`);
  const r = c.getBoundingClientRect(), host = document.querySelector("[data-boxes]");
  const times = [], compute = [];
  for (let i = 0; i < n; i++) {
    const x = r.left + (3 + (i * 7) % 18 + 0.5) * r.width / 24, y = r.top + (3 + (i * 5) % 18 + 0.5) * r.height / 24;
    const ev = (type) => new PointerEvent(type, {clientX: x, clientY: y, pointerId: 1, bubbles: true,
                                                 isPrimary: true, pointerType: "mouse"});
    const t0 = performance.now();
    c.dispatchEvent(ev("pointerdown"));
    c.dispatchEvent(ev("pointerup"));
    times.push(performance.now() - t0);
    compute.push(Number(host.dataset.computeMs));
  }
  return {times, compute, nboxes: JSON.parse(host.dataset.boxes).length,
          status: document.querySelector("[data-role=status]").textContent};
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strokes", type=int, default=40)
    args = ap.parse_args()
    if CHROMIUM is None:
        sys.exit("chromium not found (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = launch(pw)
        errors = []
        for default_aspect in (False, True):
            widget = chapter6_painter(default_aspect=default_aspect)
            shapes = len(widget.lattice["w"])
            K = sum(a * b for a, b in zip(widget.lattice["nx"], widget.lattice["ny"]))
            path = write_page(widget, Path(tmp) / str(default_aspect))
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_selector("canvas[data-mask=full]", timeout=60000)
            cases = [("paint, full mask, network start", "network", "one", "paint", "full"),
                     ("paint, full mask, ground-truth start", "ground truth", "one", "paint", "full"),
                     ("erase, all five masks", "network", "all", "erase", "top")]
            for name, source, target, mode, mask in cases:
                page.select_option("select[data-control=source]", source)
                page.select_option("select[data-control=target]", target)
                page.click(f"button[data-mode={mode}]")
                page.evaluate(STROKES_JS, [mask, 3, 1.0])                     # warm-up (JIT)
                page.select_option("select[data-control=source]", source)    # back to the start
                r = page.evaluate(STROKES_JS, [mask, args.strokes, 1.0])
                rows.append((f"{shapes} shapes, {K} candidates", name, r))
            page.close()
        browser.close()
    if errors:
        sys.exit("JavaScript errors: " + "; ".join(errors))
    print(f"mask painter, chapter 6 setting: 192x192 region, 5 x 24 x 24 masks, stride 5; "
          f"{args.strokes} strokes each; headless Chromium ({CHROMIUM})")
    print(f"{'lattice':28s} {'strokes':38s} {'median ms':>10s} {'p90 ms':>8s} {'max ms':>8s} "
          f"{'boxes only ms':>14s}  {'p90 <= 50 ms':>12s}")
    for lat, name, r in rows:
        t = sorted(r["times"])
        med, p90 = statistics.median(t), t[int(0.9 * (len(t) - 1))]
        print(f"{lat:28s} {name:38s} {med:10.1f} {p90:8.1f} {t[-1]:8.1f} "
              f"{statistics.median(r['compute']):14.1f}  {'yes' if p90 <= 50 else 'NO':>12s}")
    print("last status:", rows[-1][2]["status"])


if __name__ == "__main__":
    main()
