#!/usr/bin/env python3
"""Browser test of Switchyard's admin status page (src/admin/page.html).

Drives the system chromium through Playwright for Python (no Playwright browser
download) against a running admin listener whose backends carry traffic:

    python status_page.py --url http://127.0.0.1:PORT/ --backend CLUSTER/NAME --shots DIR [--token T] [--hold S]

Steps: the page loads and goes live; its numbers move; draining --backend moves
its traffic to the other backends; undraining it clears the state; with --final,
once traffic stops, each backend's requests as the page shows them. Screenshots
go to DIR (01-loaded, 02-moving, 03-drained, 04-undrained; failed.png on
failure). Success prints one JSON line; failure prints why and exits non-zero.
"""
import argparse
import json
import os
import sys
import threading
import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

DEADLINE_S = 55  # the whole script stays under a minute even if something hangs


class Fail(Exception):
    pass


def watchdog():
    print(json.dumps({"ok": False, "error": f"timed out after {DEADLINE_S} s"}), flush=True)
    print(f"FAIL: the whole test took longer than {DEADLINE_S} s", file=sys.stderr, flush=True)
    os._exit(3)


def css_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Numbers in cells may be grouped ("12 345"); keep digits, sign and point.
NUM_JS = "(t) => { const v = parseFloat((t || '').replace(/[^0-9.\\-]/g, '')); return isNaN(v) ? 0 : v; }"


def wait_for(page, what, js, arg=None, timeout_s=5.0):
    try:
        page.wait_for_function(js, arg=arg, timeout=timeout_s * 1000, polling=100)
    except PlaywrightError as e:
        if "Timeout" not in str(e):
            raise
        raise Fail(f"{what} (waited {timeout_s:g} s)") from None


def status_text(page):
    return page.evaluate("() => { const s = document.getElementById('status'); return s ? s.textContent : null; }")


def requests_sum(page):
    return page.evaluate(f"() => {{ const n = {NUM_JS}; let s = 0;"
                         " for (const c of document.querySelectorAll('tr[data-backend] .requests')) s += n(c.textContent);"
                         " return s; }")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="admin page URL, e.g. http://127.0.0.1:9000/")
    ap.add_argument("--backend", required=True, help="CLUSTER/NAME of the backend to drain")
    ap.add_argument("--shots", required=True, help="directory for screenshots")
    ap.add_argument("--token", help="admin bearer token (passed to the page as #token=...)")
    ap.add_argument("--final", action="store_true",
                    help="at the end, wait (up to 30 s) for traffic to stop and print each backend's .requests cell")
    ap.add_argument("--hold", type=float, default=0.0,
                    help="seconds to stay drained before undraining (for the caller to check the backends' own counts)")
    args = ap.parse_args()

    timer = threading.Timer(DEADLINE_S, watchdog)
    timer.daemon = True
    timer.start()
    os.makedirs(args.shots, exist_ok=True)
    shot = lambda name: page.screenshot(path=os.path.join(args.shots, name), full_page=True)
    url = args.url.split("#")[0] + (f"#token={args.token}" if args.token else "")
    row = f"tr[data-backend={css_str(args.backend)}]"
    page_errors = []
    step = "launch"
    page = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                        headless=True, args=["--no-sandbox"], timeout=20000)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.set_default_timeout(10000)
                page.on("pageerror", lambda e: page_errors.append(str(e)))
                page.on("console", lambda m: m.type == "error" and page_errors.append(m.text))

                step = "1 page loads"
                try:
                    page.goto(url, wait_until="domcontentloaded", timeout=10000)
                except PlaywrightError as e:
                    raise Fail(f"cannot open {args.url}: {e.message.splitlines()[0]}") from None
                try:
                    wait_for(page, "#status never said 'live'",
                             "() => { const s = document.getElementById('status'); return s && s.textContent.trim() === 'live'; }",
                             timeout_s=8)
                except Fail as e:
                    raise Fail(f"{e}; it says {status_text(page)!r}") from None
                wait_for(page, "no backend rows (tr[data-backend]) appeared",
                         "() => document.querySelector('tr[data-backend]') !== null")
                if page.query_selector(row) is None:
                    have = page.eval_on_selector_all("tr[data-backend]", "rs => rs.map(r => r.dataset.backend)")
                    raise Fail(f"no row for backend {args.backend!r}; the page shows {have}")
                shot("01-loaded.png")

                step = "2 numbers move"
                before = requests_sum(page)
                time.sleep(3)
                after = requests_sum(page)
                total_rate = page.evaluate(f"() => ({NUM_JS})(document.getElementById('total-rate')?.textContent)")
                if after <= before:
                    raise Fail(f"the sum of .requests cells did not grow in 3 s ({before} -> {after}); is traffic flowing?")
                if not total_rate > 0:
                    raise Fail(f"#total-rate is {total_rate} while requests grew {before} -> {after}")
                shot("02-moving.png")

                step = "3 drain moves traffic off"
                drain = page.locator(f"{row} button.drain")
                if drain.count() != 1 or page.locator(f"{row} button.undrain").count() != 1:
                    raise Fail(f"row {args.backend} lacks one button.drain and one button.undrain")
                drain.click(timeout=5000)
                try:
                    wait_for(page, f"{args.backend}'s .state never said 'draining'",
                             "(sel) => (document.querySelector(sel + ' .state')?.textContent || '').includes('draining')",
                             arg=row, timeout_s=5)
                except Fail as e:
                    toast = page.evaluate("() => { const t = document.getElementById('toast'); return t && !t.hidden ? t.textContent : null; }")
                    raise Fail(f"{e}; #status says {status_text(page)!r}, toast {toast!r}") from None
                # "others": the same cluster's other backends, or every other row if it has none
                rates_js = (f"(sel) => {{ const n = {NUM_JS}; let mine = null, same = 0, all = 0, peers = 0;"
                            " const cluster = document.querySelector(sel).dataset.backend.split('/')[0];"
                            " for (const r of document.querySelectorAll('tr[data-backend]')) {"
                            "   const v = n(r.querySelector('.rate')?.textContent);"
                            "   if (r.matches(sel)) { mine = v; continue; }"
                            "   all += v; if (r.dataset.backend.split('/')[0] === cluster) { same += v; peers++; } }"
                            " return {mine, others: peers ? same : all}; }")
                try:
                    wait_for(page, f"{args.backend}'s .rate did not reach 0 with other backends above 0",
                             f"(sel) => {{ const x = ({rates_js})(sel); return x.mine === 0 && x.others > 0; }}",
                             arg=row, timeout_s=8)
                except Fail as e:
                    raise Fail(f"{e}; last seen {page.evaluate(rates_js, row)}") from None
                shot("03-drained.png")
                print(json.dumps({"drained": args.backend}), flush=True)
                time.sleep(min(args.hold, 10.0))
                page.locator(f"{row} button.undrain").click(timeout=5000)
                wait_for(page, f"{args.backend}'s .state still says 'draining' after Undrain",
                         "(sel) => { const s = document.querySelector(sel + ' .state'); return s && !s.textContent.includes('draining'); }",
                         arg=row, timeout_s=5)
                shot("04-undrained.png")

                if args.final:
                    step = "5 final counts"
                    wait_for(page, "traffic never stopped (some .rate stayed above 0)",
                             f"() => {{ const n = {NUM_JS}; const rs = [...document.querySelectorAll('tr[data-backend] .rate')];"
                             " return rs.length > 0 && rs.every(c => n(c.textContent) === 0); }",
                             timeout_s=30)
                    time.sleep(1.5)  # one more poll after the last answer
                    final = page.evaluate(f"() => {{ const n = {NUM_JS}; const o = {{}};"
                                          " for (const r of document.querySelectorAll('tr[data-backend]'))"
                                          "   o[r.dataset.backend] = n(r.querySelector('.requests').textContent);"
                                          " return o; }")
                    print(json.dumps({"final": final}), flush=True)
                    shot("05-final.png")
            except (Fail, PlaywrightError):
                try:
                    shot("failed.png")
                except PlaywrightError:
                    pass
                raise
            finally:
                browser.close()
    except (Fail, PlaywrightError) as e:
        msg = str(e) if isinstance(e, Fail) else f"playwright: {e.message.splitlines()[0]}"
        if page_errors:
            msg += f" (page errors: {list(dict.fromkeys(page_errors))[:3]})"
        print(json.dumps({"ok": False, "step": step, "error": msg}), flush=True)
        print(f"FAIL step {step}: {msg}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps({"ok": True, "requests_before": int(before), "requests_after": int(after), "drained": args.backend}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
