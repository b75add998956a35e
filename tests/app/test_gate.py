"""The access gate holds per session on every page and download, on a fresh server too (issue 9,
findings 6 and 11): no process-wide flag, deep links keep their page, guesses are rate-limited.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
import streamlit.testing.v1.app_test as app_test_module
from playwright.sync_api import BrowserContext, Page, sync_playwright
from streamlit.runtime.pages_manager import PagesManager

from app.gate import FREE_ATTEMPTS, AttemptLimiter
from common.config import Settings
from tests.app.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    app_env,
    app_server,
    assert_no_errors,
    heartbeat,
    seed_pages,
    wait_idle,
    wait_until_done,
)
from tests.app.seed import (
    ROOT,
    all_text,
    insert_liquidations,
    liq,
    no_exceptions,
    now_ms,
    open_app,
    open_fresh,
)
from tests.app.seed import app_env as apptest_env

PASSWORD = "gate-s3cret"
# Each page with the heading it shows once open (and that the gate must not show).
TITLES = {
    "market": "Market overview",
    "live": "Live — last 60 minutes",
    "accumulated": "Accumulated",
    "chart": "Chart",
    "heatmap": "Heatmap",
    "cascades": "Cascades",
    "alerts": "Alerts",
    "analyses": "Analyses",
    "explorer": "Explorer",
}
# Seeded data no gated session may ever receive: a symbol (offered in the sidebar, listed on the
# pages with ALL) and a price (shown in tables and hover texts).
LEAK_SYMBOL = "QQLEAKUSDT"
LEAK_PRICE = "61234.5"


# --- The rate limiter on its own -------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_gives_free_attempts_then_growing_locks() -> None:
    clock = _Clock()
    limiter = AttemptLimiter(clock=clock)
    keys = ["session:a", "client:1.2.3.4"]
    for _ in range(FREE_ATTEMPTS - 1):
        assert limiter.failed(keys) == 0 and limiter.wait_s(keys) == 0
    locks = []
    for _ in range(5):
        locks.append(limiter.failed(keys))
        assert limiter.wait_s(keys) == locks[-1] > 0
        clock.now += locks[-1]  # wait it out
        assert limiter.wait_s(keys) == 0
    assert locks == [2.0, 4.0, 8.0, 16.0, 32.0]
    limiter.succeeded(keys)
    assert limiter.wait_s(keys) == 0 and len(limiter) == 0


def test_limiter_allows_no_burst_of_guesses() -> None:
    # Finding 11: 31 guesses in 4 s. A guesser who tries again the moment a lock ends gets 6.
    clock = _Clock()
    limiter = AttemptLimiter(clock=clock)
    keys = ["session:x", "client:loopback"]
    start, tried = clock.now, 0
    while clock.now - start <= 4.0:
        wait = limiter.wait_s(keys)
        if wait > 0:
            clock.now += wait
            continue
        limiter.failed(keys)
        tried += 1
    assert tried <= FREE_ATTEMPTS + 1
    # Once locked, a new session from the same client is locked as well, and a new client in the
    # same session.
    limiter.failed(keys)
    assert limiter.wait_s(["session:new", "client:loopback"]) > 0
    assert limiter.wait_s(["session:x", "client:elsewhere"]) > 0
    assert limiter.wait_s(["session:new", "client:elsewhere"]) == 0


def test_limiter_is_bounded_forgets_and_is_thread_safe() -> None:
    clock = _Clock()
    limiter = AttemptLimiter(max_keys=100, forget_s=60, clock=clock)
    for i in range(1000):
        limiter.failed([f"session:{i}"])
    assert len(limiter) == 100  # the least recently failed went first
    assert limiter.wait_s(["session:999"]) == 0 and len(limiter) == 100
    clock.now += 61
    limiter.failed(["session:new"])
    assert len(limiter) == 1  # idle keys are forgotten

    shared = AttemptLimiter(free=10_000)
    threads = [threading.Thread(target=lambda: [shared.failed(["client:c"]) for _ in range(500)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shared._records["client:c"].failures == 4000  # no lost update


# --- AppTest: every page, a fresh server's first run ----------------------------------------------


def test_no_process_wide_flag_or_apptest_patch_remains() -> None:
    # The gate used to flip PagesManager.uses_pages_directory, and the tests patched AppTest's
    # PagesManager to match. Neither may come back.
    assert app_test_module.PagesManager is PagesManager
    for path in [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("tests", "app").glob("*.py")]:
        if path.name == "test_gate.py":
            continue
        text = path.read_text()
        assert "uses_pages_directory" not in text and "PagesManager" not in text, path
    assert (ROOT / "app" / "pages").is_dir()  # the users' layout: the legacy folder is there


@pytest.mark.parametrize("page", list(TITLES))
def test_fresh_server_deep_link_shows_only_the_gate(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, page: str
) -> None:
    apptest_env(monkeypatch, settings, LIQ_APP_PASSWORD=PASSWORD)
    insert_liquidations(
        settings.database_url, [liq("bybit", "LONG", "1", LEAK_PRICE, now_ms() - 60_000, symbol=LEAK_SYMBOL)]
    )
    at = open_fresh(page, {"symbol": "ALL", "hours": "24"})
    no_exceptions(at)
    assert [t.label for t in at.text_input] == ["Password"]
    assert not at.metric and not at.dataframe and not at.get("plotly_chart") and not at.get("download_button")
    assert not at.sidebar.header  # no filters
    assert TITLES[page] not in [t.value for t in at.title]
    assert LEAK_SYMBOL not in repr(at) and "61,234.50" not in repr(at)
    assert at.query_params["symbol"] == "ALL"  # the link is kept for after the password


@pytest.mark.parametrize("page", list(TITLES))
def test_fresh_server_deep_link_runs_inside_the_frame(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, page: str
) -> None:
    # No password configured: the standalone legacy run of the page file reruns into the frame,
    # which draws the filters; the page draws its title once.
    apptest_env(monkeypatch, settings)
    at = open_fresh(page)
    no_exceptions(at)
    assert [h.value for h in at.sidebar.header] == ["Filters"]
    assert [t.value for t in at.title] == [TITLES[page]]


def test_a_session_state_value_is_not_a_pass(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    # A browser can send a widget value under any id; the gate counts only what it stored itself.
    apptest_env(monkeypatch, settings, LIQ_APP_PASSWORD=PASSWORD)
    at = open_app("explorer")
    at.session_state["gate_passed"] = True
    at.run()
    no_exceptions(at)
    assert [t.label for t in at.text_input] == ["Password"] and not at.metric


def _submit(at: object, password: str) -> None:
    at.text_input[0].input(password)  # type: ignore[attr-defined]
    at.button[0].click().run()  # type: ignore[attr-defined]


def test_password_attempts_are_rate_limited(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    apptest_env(monkeypatch, settings, LIQ_APP_PASSWORD=PASSWORD)
    at = open_app("accumulated")
    for i in range(FREE_ATTEMPTS - 1):
        _submit(at, f"guess-{i}")
        assert [e.value for e in at.error] == ["Wrong password."]
    _submit(at, "guess-last")
    assert "Too many attempts, try again in 2 s." in [e.value for e in at.error]
    _submit(at, PASSWORD)  # locked: not even the right password is looked at
    assert [e.value for e in at.error] == ["Too many attempts, try again in 2 s."] and not at.metric
    other = open_app("accumulated")  # another session from the same client
    _submit(other, PASSWORD)
    assert any(e.value.startswith("Too many attempts") for e in other.error) and not other.metric
    time.sleep(2.2)
    _submit(at, PASSWORD)
    no_exceptions(at)
    assert not at.error and [t.value for t in at.title] == ["Accumulated"]
    assert "No liquidations stored yet" in all_text(at)  # the page itself, on an empty database


# --- A real server, freshly started, with simultaneous browsers ----------------------------------


def _gated(page: Page) -> None:
    page.locator('input[type="password"]').wait_for(timeout=60_000)
    wait_idle(page)


def _assert_only_the_gate(page: Page, name: str) -> None:
    assert_no_errors(page, name)
    assert page.locator('input[type="password"]').count() == 1, name
    for selector in (
        '[data-testid="stDataFrame"]',
        ".js-plotly-plot",
        '[data-testid="stMetric"]',
        '[data-testid="stDownloadButton"]',
        '[data-testid="stSidebar"] h2',
    ):
        assert page.locator(selector).count() == 0, (name, selector)
    text = page.locator("body").inner_text()
    assert "Filters" not in text and LEAK_SYMBOL not in text, name
    for title in TITLES.values():
        assert page.get_by_role("heading", name=title, exact=True).count() == 0, (name, title)


@pytest.fixture
def seeded_pages(settings: Settings, sync_redis: redis.Redis) -> Iterator[None]:
    now = now_ms()
    extra = [
        liq("bybit", "SHORT", "2", LEAK_PRICE, now - 2 * 3_600_000, symbol=LEAK_SYMBOL),
        liq("bybit", "LONG", "0.5", LEAK_PRICE, now - 3 * 3_600_000),
    ]
    seed_pages(settings, sync_redis, extra)
    stop = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(settings, stop), daemon=True)
    beat.start()
    yield
    stop.set()
    beat.join(timeout=5)


@pytest.mark.browser
@pytest.mark.parametrize("start", [1, 2, 3])
def test_fresh_server_gates_every_page_for_simultaneous_browsers(
    settings: Settings, seeded_pages: None, start: int, tmp_path: Path
) -> None:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install chromium"
    received: dict[str, list[bytes]] = {}

    def _record(name: str, page: Page) -> None:
        frames = received.setdefault(name, [])
        page.on(
            "websocket",
            lambda ws: ws.on(
                "framereceived",
                lambda payload: frames.append(payload if isinstance(payload, bytes) else payload.encode()),
            ),
        )

    with (
        app_server(app_env(settings, password=PASSWORD), log_name=f"gate-server-{start}.log") as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            contexts: list[BrowserContext] = []
            pages: dict[str, Page] = {}
            for name in TITLES:  # one browser context (its own cookies, its own session) per page
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                contexts.append(context)
                pages[name] = context.new_page()
                _record(name, pages[name])
            for name, page in pages.items():  # all at once on the fresh server: only the commit is awaited
                page.goto(f"{url}/{name}?symbol=ALL&hours=48", wait_until="commit")
            for name, page in pages.items():
                _gated(page)
                _assert_only_the_gate(page, name)
            pages["chart"].screenshot(path=str(ARTIFACTS / f"gate-chart-fresh-{start}.png"))

            # A download URL: nothing was generated for these sessions, so there is nothing to fetch.
            for guess in ("/media/0123456789abcdef0123456789abcdef0123456789abcdef01234567.csv", "/media/"):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(url + guess, timeout=10)
                assert refused.value.code in (403, 404)
            for name, frames in received.items():
                joined = b"".join(frames)
                assert frames and LEAK_SYMBOL.encode() not in joined and b"61,234.50" not in joined, name
                assert b"/media/" not in joined, name

            # The password in one context opens its deep link; the address bar names it.
            explorer = pages["explorer"]
            explorer.locator('input[type="password"]').fill(PASSWORD)
            explorer.locator('input[type="password"]').press("Enter")
            wait_until_done(explorer, "Explorer")
            assert urlparse(explorer.url).path == "/explorer", explorer.url
            assert "target=ALL" in explorer.url and "hours=48" in explorer.url  # the old link, in today's words
            explorer.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
            assert explorer.locator('[data-testid="stDownloadButton"]').count() >= 2
            assert LEAK_SYMBOL.encode() in b"".join(received["explorer"])  # the check above can see data
            explorer.screenshot(path=str(ARTIFACTS / f"gate-explorer-after-password-{start}.png"))

            # The others are still at the gate, also after reloading on the now-warm server.
            for name, page in pages.items():
                if name == "explorer":
                    continue
                if name in ("chart", "live"):
                    page.reload(wait_until="commit")
                _gated(page)
                _assert_only_the_gate(page, name)
                assert LEAK_SYMBOL.encode() not in b"".join(received[name]), name

            # And a guesser in another context is stopped after a few tries.
            guesser = pages["heatmap"]
            field = guesser.locator('input[type="password"]')
            began = time.monotonic()
            for i in range(FREE_ATTEMPTS + 2):
                seen = len(received["heatmap"])
                field.fill(f"guess-{i}")
                field.press("Enter")
                while len(received["heatmap"]) == seen:  # the server answered this attempt
                    guesser.wait_for_timeout(50)
                    assert time.monotonic() - began < 60
                wait_idle(guesser, quiet_ms=500)
            guesser.get_by_text(re.compile(r"Too many attempts, try again in \d+ s")).first.wait_for(timeout=10_000)
            assert time.monotonic() - began < 60
            _assert_only_the_gate(guesser, "heatmap after guesses")
        finally:
            browser.close()
