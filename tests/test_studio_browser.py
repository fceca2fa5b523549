"""A real browser on the studio: Debian's chromium, driven by Playwright (never a downloaded browser).

Generates audio in the Kokoro tab, checks the page's <audio> element can play it, and keeps a screenshot of
each tab in artifacts/screenshots/.
"""

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from studio_server import REPO, running_studio

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
GENERATION_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with running_studio(tmp_path_factory.mktemp("studio_browser")) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#kokoro-generate")
        yield page
        browser.close()


def open_tab(page, name):
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)


def test_kokoro_generates_playable_audio(page):
    open_tab(page, "Kokoro")
    page.fill("#kokoro-text textarea", "こんにちは。")
    page.click("#kokoro-generate")
    player = "#kokoro-audio audio"
    page.wait_for_function(
        f"() => {{ const a = document.querySelector('{player}'); return a && a.src && a.readyState >= 1; }}",
        timeout=GENERATION_TIMEOUT_MS,
    )
    src, duration, error = page.eval_on_selector(player, "a => [a.src, a.duration, a.error && a.error.code]")
    assert "/gradio_api/file=" in src and src.endswith(".wav")
    assert error is None
    assert 0.3 < duration < 5
    playing = page.eval_on_selector(player, "a => { a.muted = true; return a.play().then(() => true, e => String(e)); }")
    assert playing is True
    assert "real-time factor" in page.inner_text("#kokoro-stats")
    page.screenshot(path=str(SCREENSHOTS / "kokoro.png"), full_page=True)


def test_csm_tab_says_what_to_download(page):
    open_tab(page, "CSM voice cloning")
    page.click("#csm-load")
    page.wait_for_function(
        "() => document.querySelector('#csm-status').innerText.includes('not available')", timeout=60_000
    )
    assert "mlx-community/csm-1b" in page.inner_text("#csm-status")
    page.screenshot(path=str(SCREENSHOTS / "csm.png"), full_page=True)


def test_quant_tab_compares_8bit_with_full_precision(page):
    open_tab(page, "Quantization workbench")
    page.click("#quant-compare")
    page.wait_for_function(
        "() => document.querySelector('#quant-measures').innerText.includes('log-mel distance')",
        timeout=GENERATION_TIMEOUT_MS,
    )
    for player in ("#quant-reference audio", "#quant-candidate audio"):
        page.wait_for_function(f"() => document.querySelector('{player}').readyState >= 1", timeout=30_000)
        assert page.eval_on_selector(player, "a => a.duration") > 0.3
    page.screenshot(path=str(SCREENSHOTS / "quant.png"), full_page=True)
