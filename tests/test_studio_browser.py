"""A real browser on the studio: Debian's chromium, driven by Playwright (never a downloaded browser).

Generates audio in the Kokoro tab, clones a voice in the CSM tab with a tiny random model, checks the page's
<audio> elements can play what they get, and keeps a screenshot of each tab in artifacts/screenshots/.
"""

from pathlib import Path

import pytest
import soundfile as sf
from playwright.sync_api import expect, sync_playwright

from studio_server import REPO, running_studio
from tiny_csm import speech_like, tiny_mlx_csm_folder

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
    # The tests' models are made under pytest's temp folder: the studio (lab mode) may load them from there.
    work_dir, models = tmp_path_factory.mktemp("studio_browser"), str(tmp_path_factory.getbasetemp())
    with running_studio(work_dir, "--model-dir", models) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#kokoro-generate")
        yield page
        browser.close()


def open_tab(page, name):
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)


def assert_plays(output, min_s, max_s):
    """The audio component `output` gets a wav from the server that the browser can play; a failed request
    fails the test at once, with the message the page shows."""
    page = output.page
    player = output.locator("audio[src*='/gradio_api/file=']")
    error = page.get_by_test_id("toast-body").filter(has_text="Error")
    player.or_(error).first.wait_for(state="attached", timeout=GENERATION_TIMEOUT_MS)
    if error.count():
        pytest.fail(f"the page shows an error: {error.first.inner_text()}")
    player.evaluate("a => a.readyState >= 1 || a.error || new Promise(done => {"
                    " a.addEventListener('loadedmetadata', done); a.addEventListener('error', done); })")
    src, duration, error_code = player.evaluate("a => [a.src, a.duration, a.error && a.error.code]")
    assert src.endswith(".wav")
    assert error_code is None, f"{src} does not play"
    assert min_s < duration < max_s
    assert player.evaluate("a => { a.muted = true; return a.play().then(() => true, e => String(e)); }") is True


def test_kokoro_generates_playable_audio(page):
    open_tab(page, "Kokoro")
    page.fill("#kokoro-text textarea", "Hello from the studio.")
    page.click("#kokoro-generate")
    assert_plays(page.locator("#kokoro-audio"), 0.3, 5)
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


def test_csm_clones_a_reference_clip_with_a_tiny_model(page, tmp_path):
    folder = tiny_mlx_csm_folder(tmp_path / "tiny-csm")
    reference = tmp_path / "reference.wav"
    sf.write(reference, speech_like(1.5), 24000)
    open_tab(page, "CSM voice cloning")
    page.get_by_role("textbox", name="Model").fill(str(folder))
    page.click("#csm-load")
    expect(page.locator("#csm-status")).to_contain_text("Ready: csm model", timeout=60_000)

    clip = page.locator(".block").filter(has=page.get_by_text("Reference clip (voice to clone)", exact=True))
    clip.locator("input[type=file]").set_input_files(reference)
    report = page.get_by_text("loudness (RMS)")
    expect(report).to_contain_text("1.5 s · 24000 Hz")
    expect(report).to_contain_text("peak")
    page.get_by_role("textbox", name="Transcript of the reference clip").fill("hello world")
    page.get_by_role("textbox", name="Text to speak").fill("how are you today")
    max_ms = page.get_by_role("spinbutton", name="Maximum length (ms)")
    max_ms.fill("400")  # the slider's least: five 80 ms frames
    max_ms.press("Enter")
    page.get_by_role("button", name="Generate", exact=True).click()

    clone = page.locator(".block").filter(has=page.get_by_text("Clone", exact=True))
    assert_plays(clone, 0, 0.41)
    expect(page.get_by_text("real-time factor").filter(visible=True)).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "csm_clone.png"), full_page=True)


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
