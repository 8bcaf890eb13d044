"""The status page in a real browser (issue 17): Debian's Chromium driven by Playwright
(``executable_path``: no browser is downloaded). Next to a real `gtm up`, logged in with a
viewer token, the page loads without a console error, shows the four regions of the
example steering, the DNS traffic split once steered queries are answered, and shows a
region set down through the API as down within 3 s (the
product requirement: the wait below is the assertion). The screenshot is kept in the
test's tmp_path, and its path printed."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.integration.servers import (
    EXAMPLE_ZONES,
    GtmServer,
    ServerFactory,
)
from tests.integration.test_up_health_view import gtm, region_file

# gtm up probes the example endpoints, which the example regions of other tests serve.
pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(90),
              pytest.mark.usefixtures("example_regions")]

CHROMIUM = "/usr/bin/chromium"
HOST = "127.0.78.1"  # this test's own loopback address for its balancer
DOWN_WITHIN_MS = 3000


def require_browser() -> None:
    missing = []
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[test]')")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        missing.append("chromium (apt-get install chromium)")
    if not missing:
        return
    message = f"the browser test needs {' and '.join(missing)}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: CI requires it")
    pytest.skip(f"!!! SKIPPED: {message} !!!")


def api_url(server: GtmServer) -> str:
    match = re.search(r"status page: (http://\S+)/status", server.log())
    assert match, server.log()
    return match.group(1)


def viewer_token(api: str, admin_token: str) -> str:
    request = urllib.request.Request(
        f"{api}/v1/tokens", data=json.dumps({"name": "wall", "role": "viewer"}).encode(),
        method="POST", headers={"Authorization": f"Bearer {admin_token}",
                                "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["token"])


def test_the_status_page_shows_four_regions_and_a_region_set_down_within_3_s(
        gtm_server: ServerFactory, tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    region = region_file(tmp_path / "us-east.toml", "us-east", HOST,
                         "report_interval = 0.5")
    server = gtm_server(EXAMPLE_ZONES, workers=None, subcommand="up", extra=[
        "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--region", str(region)])
    api = api_url(server)
    token = viewer_token(api, (tmp_path / "var" / "control" / "admin.token").read_text().strip())
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"{api}/status")
            page.fill("#token", token)
            page.click("button[type=submit]")
            try:
                page.wait_for_selector("#map [data-region]", timeout=10_000, state="attached")
            except Exception:
                page.screenshot(path=str(tmp_path / "failed.png"))
                raise AssertionError(f"{problems}\n{page.content()[:3000]}") from None
            names = page.eval_on_selector_all(
                "#map [data-region]", "dots => dots.map(d => d.dataset.region).sort()")
            assert names == ["ap-northeast", "eu-west", "sa-east", "us-east"]
            assert token not in page.url
            # The balancer's report reaches the page through the DNS node's health summary.
            headroom = '#regions tr[data-region="us-east"] td:nth-child(4):not(:text("—"))'
            page.wait_for_selector(headroom, timeout=15_000)

            # The DNS traffic split: steered answers per region, as the node reports them.
            for _ in range(10):
                assert server.query("www.gslb.example.test.", "A").answer
            page.wait_for_function(
                "() => [...document.querySelectorAll('#regions tbody tr')].some("
                "row => /^[1-9][0-9]* %$/.test(row.children[6].textContent))",
                timeout=10_000)
            shares = page.eval_on_selector_all(
                "#regions tbody tr", "rows => rows.map(r => r.children[6].textContent)")
            assert sum(int(text.removesuffix(" %")) for text in shares) in (99, 100, 101)
            assert "from 1 node(s)" in (page.text_content("#split-note") or "")

            gtm(server, tmp_path, "steer", "region", "gslb.example.test", "eu-west",
                "--health", "down", "--reason", "browser test")
            page.wait_for_selector('#map [data-region="eu-west"][data-state="down"]',
                                   timeout=DOWN_WITHIN_MS)
            page.wait_for_selector('#regions tr[data-region="eu-west"][data-state="down"]',
                                   timeout=DOWN_WITHIN_MS)
            page.wait_for_selector('#events td.type:text-is("steer.region")', timeout=5_000)
            shot = tmp_path / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"status page screenshot: {shot}")
        finally:
            browser.close()
    assert problems == []
