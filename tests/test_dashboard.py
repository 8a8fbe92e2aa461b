"""The live dashboard of `voxbus http`, in a real headless browser (Debian's chromium through its
chromedriver, driven by selenium) against a real deployment: nats-server, the ModelManager with
the bundled models, the STT service and the gateway. What is asserted is what the page shows.

The deployment runs in this test's event loop, so every (blocking) browser call goes through a
thread, and the bus keeps moving meanwhile.
"""

import asyncio
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request

import pytest
import pytest_asyncio

from tests.helpers import embedded_config, make_config, running_manager
from tests.speech import speak
from voxbus.audio import encode_pcm
from voxbus.client import ModelClient
from voxbus.gateways import http_app
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, Transcript, codec
from voxbus.server import NatsServer
from voxbus.stt import SttService

SENTENCES = ["The museum opens early on Sunday morning.", "Tickets are sold at the front desk."]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):  # (.ci/run installs both: missing there is a broken install, not a skip)
        raise RuntimeError("chromium and chromedriver are required for tests/test_dashboard.py")
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module")]
KEY = "dashboard-test-key"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    async with NatsServer(embedded_config(), store_dir=tmp / "js") as server:
        config = make_config(server.url, tmp / "cache")
        async with running_manager(config) as (bus, manager):
            async with SttService(bus):
                async with http_app.serving(bus, "127.0.0.1", 0) as url, \
                        http_app.serving(bus, "127.0.0.1", 0, api_key=KEY) as locked:
                    audio, rate = await speak(ModelClient.from_bus(bus), SENTENCES)
                    yield bus, url, locked, encode_pcm(audio, AudioFormat(rate=rate)), AudioFormat(rate=rate)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def js_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


async def in_browser(fn, *args):
    return await asyncio.to_thread(fn, *args)


def wait_for(driver, script: str, timeout: float, *args):
    """Poll a JavaScript expression in the page until it is truthy; its value. On a time-out, the
    failure says what the page showed and what its console said."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: d.execute_script(f"return ({script});", *args))
    except TimeoutException:
        shown = driver.execute_script("return document.querySelector('main').innerText;")
        raise AssertionError(f"waited {timeout} s for {' '.join(script.split())[:160]!r}\n-- the page shows:\n"
                             f"{shown[:3000]}\n-- its console:\n{driver.get_log('browser')}") from None


RECORD_INTERIM = """
window.__interim = [];
new MutationObserver(() => {
  for (const p of document.querySelectorAll('#sessions .interim'))
    if (p.textContent) window.__interim.push([p.closest('[data-session]').dataset.session, p.textContent]);
}).observe(document.getElementById('sessions'), {subtree: true, childList: true, characterData: true});
"""


async def test_dashboard_follows_a_live_session_and_shows_the_loaded_models(stack, browser):
    bus, url, _, pcm, fmt = stack
    await in_browser(browser.get, url + "/")
    await in_browser(wait_for, browser, "document.getElementById('connection').dataset.state === 'live'", 15)
    await in_browser(browser.execute_script, RECORD_INTERIM)
    sid = "dash-live-1"
    finals: list[tuple[float, Transcript]] = []

    async def on(msg) -> None:
        finals.append((time.monotonic(), codec.decode(msg.data, Transcript)))

    sub = await bus.nc.subscribe(bus.subjects.transcript(sid), cb=on)
    try:
        await SessionPublisher(bus, sid, realtime=True).publish_pcm(pcm, fmt)
        for _ in range(600):
            if len(finals) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await sub.unsubscribe()
    assert len(finals) >= 2, f"the STT gave {len(finals)} finals"
    # Each final shows on the page within 5 s of its publication (measured from when it was seen here).
    for seen_at, final in finals:
        shown = await in_browser(wait_for, browser, """(() => {
            const line = document.querySelector(`[data-session="${arguments[0]}"] .final[data-utterance="${arguments[1]}"]`);
            return line && line.textContent; })()""", 5.0, sid, final.utterance)
        assert final.text.strip() in shown
        assert time.monotonic() - seen_at < 5.0
    interim = await in_browser(browser.execute_script, "return window.__interim;")
    assert any(s == sid and text.strip() for s, text in interim), "no interim text was shown while speaking"
    # The models the deployment loaded (STT for the session, TTS for the test's speech), with memory.
    stt_model = bus.config.stt.model or bus.config.manager.defaults["stt"]
    for model in (stt_model, bus.config.manager.defaults["tts"]):
        row = await in_browser(wait_for, browser, """(() => {
            const tr = document.querySelector(`#models tr[data-model="${arguments[0]}"]`);
            return tr && tr.dataset.state === 'loaded' && tr.textContent; })()""", 10, model)
        assert re.search(r"\d+ MiB", row), row
    timeline = await in_browser(wait_for, browser, """[...document.querySelectorAll('#events li[data-event="loaded"]')]
        .map((li) => li.textContent).join('\\n')""", 10)
    assert stt_model in timeline
    assert await in_browser(browser.execute_script, "return document.querySelectorAll('#lanes circle').length") > 0
    assert not await in_browser(js_errors, browser)


async def test_a_tab_opened_mid_session_shows_what_it_said_so_far_then_the_rest_live(stack, browser):
    bus, url, _, pcm, fmt = stack
    sid = "dash-late-tab"
    first = asyncio.Event()

    async def on(msg) -> None:
        first.set()

    sub = await bus.nc.subscribe(bus.subjects.transcript(sid), cb=on)
    speaking = asyncio.create_task(SessionPublisher(bus, sid, realtime=True).publish_pcm(pcm, fmt))
    try:
        await asyncio.wait_for(first.wait(), 60)
        await in_browser(browser.get, url + "/")  # (a new page: it saw nothing of this session live)
        final = f'[data-session="{sid}"] .final'
        early = await in_browser(wait_for, browser, f"document.querySelector('{final}[data-utterance=\"0\"]')?.textContent", 10)
        assert "museum" in early.lower()
        await speaking
        later = await in_browser(wait_for, browser, f"document.querySelector('{final}[data-utterance=\"1\"]')?.textContent", 30)
        assert "tickets" in later.lower()
        assert await in_browser(browser.execute_script, f"return document.querySelectorAll('{final}').length") == 2
    finally:
        speaking.cancel()
        await sub.unsubscribe()


async def test_session_player_shows_the_waveform_and_plays_the_clicked_word(stack, browser):
    bus, url, _, pcm, fmt = stack
    sid = "dash-player-1"
    await SessionPublisher(bus, sid).publish_pcm(pcm, fmt)
    await in_browser(browser.get, url + "/")
    item = f'#stored li[data-session="{sid}"]'
    await in_browser(wait_for, browser, f"""(() => {{ const li = document.querySelector('{item}');
        if (!li || !li.textContent.includes('utt.')) document.getElementById('refresh-sessions').click();
        return li && li.textContent.includes('2 utt.'); }})()""", 60)  # (listed, and transcribed)
    await in_browser(browser.execute_script, f"document.querySelector('{item}').click();")
    words = await in_browser(wait_for, browser, """(() => { const w = document.querySelectorAll('#words .word');
        return w.length >= 8 && [...w].map((n) => [n.textContent, +n.dataset.start, +n.dataset.end]); })()""", 30)
    said = [w.strip(".,").lower() for w in " ".join(SENTENCES).split()]
    assert sum(text.strip(".,").lower() in said for text, _, _ in words) >= len(words) - 2, words
    assert all(a[1] <= b[1] for a, b in zip(words, words[1:])), "the words are not in time order"
    duration = await in_browser(browser.execute_script, "return voxbus.sessionPlayer.wavesurfer.getDuration();")
    assert abs(duration - len(pcm) / 2 / fmt.rate) < 0.1
    decoded = await in_browser(browser.execute_script, """const d = voxbus.sessionPlayer.wavesurfer.getDecodedData();
        return [d.duration, Math.max(...d.getChannelData(0).map(Math.abs))];""")
    assert abs(decoded[0] - duration) < 0.1 and decoded[1] > 0.05, decoded  # (the waveform is of the speech)
    # Click the fourth word: the player is sent to its start, to play until its end.
    _, start, end = words[3]
    await in_browser(lambda: browser.find_elements(By.CSS_SELECTOR, "#words .word")[3].click())
    asked = await in_browser(wait_for, browser, "voxbus.sessionPlayer.lastPlayed", 5)
    assert (asked["start"], asked["end"]) == (start, end)
    at = await in_browser(browser.execute_script, "return voxbus.sessionPlayer.wavesurfer.getCurrentTime();")
    assert start - 0.01 <= at <= end + 0.05, (start, at, end)
    assert not await in_browser(js_errors, browser)
    if os.environ.get("DASHBOARD_SCREENSHOT"):  # (to look at the page: a PNG of it as the test left it)
        await in_browser(browser.save_screenshot, os.environ["DASHBOARD_SCREENSHOT"])


def get(url: str, key: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_dashboard_api_wants_the_key_and_answers_bad_sessions_with_typed_errors(stack):
    _, _, locked, _, _ = stack
    status, page = await asyncio.to_thread(get, locked + "/")
    assert status == 200 and b"voxbus dashboard" in page  # (the page holds no data: served to anyone)
    status, body = await asyncio.to_thread(get, locked + "/dashboard/api/sessions")
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    status, body = await asyncio.to_thread(get, locked + "/dashboard/api/sessions", KEY)
    assert status == 200 and "sessions" in json.loads(body)
    status, body = await asyncio.to_thread(get, locked + "/dashboard/api/sessions/bad%20id", KEY)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_name"
    status, body = await asyncio.to_thread(get, locked + "/dashboard/api/sessions/never-published/audio.wav", KEY)
    assert status == 404 and json.loads(body)["error"]["code"] == "session_not_found"
    status, body = await asyncio.to_thread(get, locked + "/dashboard/api/sessions?since=yesterdayish", KEY)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_since"
