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
from voxbus.bus import open_bus
from voxbus.client import ModelClient
from voxbus.gateways import dashboard_feed, http_app
from voxbus.ingest import SessionPublisher
from voxbus.messages import AudioFormat, PartialTranscript, Transcript, codec
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

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(180)]  # (a stuck browser or stream fails here with its traceback, sooner)
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


@pytest.fixture
def browser(chromium):
    yield chromium
    chromium.get("about:blank")  # (the page's live feed ends with the test)


@pytest.fixture(scope="module")
def chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
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


RECORD = """
window.__interim = []; window.__shown = {};
new MutationObserver(() => {
  for (const p of document.querySelectorAll('#sessions .interim'))
    if (p.textContent) window.__interim.push([p.closest('[data-session]').dataset.session, p.textContent]);
  for (const f of document.querySelectorAll('#sessions .final')) {
    const key = f.closest('[data-session]').dataset.session + '/' + f.dataset.utterance;
    window.__shown[key] ??= [Date.now() / 1000, f.textContent];
  }
}).observe(document.getElementById('sessions'), {subtree: true, childList: true, characterData: true});
"""


async def test_dashboard_follows_a_live_session_and_shows_the_loaded_models(stack, browser):
    bus, url, _, pcm, fmt = stack
    await in_browser(browser.get, url + "/")
    await in_browser(wait_for, browser, "document.getElementById('connection').dataset.state === 'live'", 15)
    await in_browser(browser.execute_script, RECORD)
    sid = "dash-live-1"
    finals: list[tuple[float, Transcript]] = []

    async def on(msg) -> None:
        finals.append((time.time(), codec.decode(msg.data, Transcript)))  # (the page's clock is this machine's)

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
    # Each final showed on the page within 5 s of its publication: the page noted when each line
    # appeared, and this test when the final reached it from the bus.
    for seen_at, final in finals:
        at, shown = await in_browser(wait_for, browser, "window.__shown[arguments[0]]", 5.0,
                                     f"{sid}/{final.utterance}")
        assert final.text.strip() in shown
        assert at - seen_at < 5.0, f"utterance {final.utterance} showed {at - seen_at:.2f} s after its final"
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
    # It plays that word and stops at its end.
    stopped = await in_browser(wait_for, browser, """(() => { const ws = voxbus.sessionPlayer.wavesurfer;
        return !ws.isPlaying() && ws.getCurrentTime() > arguments[0] + 0.01 && ws.getCurrentTime(); })()""",
                               10, start)
    assert end - 0.05 <= stopped <= end + 0.3, (start, end, stopped)
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


def first_event(url: str, key: str | None = None) -> tuple[int, str]:
    """Open the feed and read its first event line (the stream itself never ends)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.readline().decode().strip()
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["error"]["code"]


async def test_the_feed_wants_the_key_and_a_keyless_gateway_answers_only_to_its_loopback_names(stack):
    _, url, locked, _, _ = stack
    assert await asyncio.to_thread(first_event, locked + "/dashboard/api/feed") == (401, "invalid_api_key")
    assert await asyncio.to_thread(first_event, locked + "/dashboard/api/feed", KEY) == (200, "event: hello")
    assert await asyncio.to_thread(first_event, url + "/dashboard/api/feed") == (200, "event: hello")
    # A page under another name that resolves here (DNS rebinding) may not read the sessions.
    req = urllib.request.Request(url + "/dashboard/api/sessions", headers={"Host": "voxbus.example.com"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, req, timeout=30)
    assert refused.value.code == 403 and json.loads(refused.value.read())["error"]["code"] == "forbidden_host"


@pytest_asyncio.fixture(loop_scope="module")
async def bare_bus(tmp_path):
    """A bus of its own (a server and the streams, no model): the feed's own rules."""
    async with NatsServer(embedded_config(), store_dir=tmp_path / "js") as server:
        async with open_bus(make_config(server.url, tmp_path / "cache"), name="feed-test", embed=False) as bus:
            yield bus


async def test_the_gateway_stops_promptly_with_a_dashboard_tab_open(bare_bus):
    bus = bare_bus
    async with http_app.serving(bus, "127.0.0.1", 0) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /dashboard/api/feed HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"event: hello"), 10)
        assert b" 200 " in head and b"text/event-stream" in head
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5, "the gateway waited for the open dashboard stream"
    await asyncio.wait_for(reader.read(), 5)  # (and the tab's stream was ended: end of file)
    writer.close()


async def test_a_tab_that_falls_behind_is_dropped_and_the_feed_keeps_one_set_of_subscriptions(bare_bus, monkeypatch):
    bus = bare_bus
    monkeypatch.setattr(dashboard_feed, "QUEUE", 5)
    feed = dashboard_feed.DashboardFeed(bus, interval=60)
    watched = {bus.subjects.all_partials(), bus.subjects.all_transcripts(), bus.subjects.all_replies(),
               bus.subjects.all_control(), bus.subjects.all_admin()}
    # (the connection's own subscriptions on the feed's subjects: a leaked set shows there)
    open_subs = lambda: sum(sub.subject in watched for sub in bus.nc._subs.values())  # noqa: E731
    before = open_subs()
    slow = feed.watch()
    assert (await anext(slow))[0] == "hello"
    subs = open_subs() - before
    assert subs == len(feed.subs) == 5
    for i in range(20):  # the slow tab reads none of these
        await bus.nc.publish(bus.subjects.partial("lag-1"), codec.encode(PartialTranscript(
            session="lag-1", utterance=0, revision=i, text=f"word {i}", start=0.0, end=0.1 * i)))
    await bus.nc.flush()
    for _ in range(100):
        if not feed.tabs:
            break
        await asyncio.sleep(0.02)
    assert not feed.tabs, "the slow tab was not dropped"
    fresh = feed.watch()  # a tab connecting while the dropped one is still leaving
    assert (await anext(fresh))[0] == "hello"
    assert open_subs() - before == subs  # (not a second set)
    names = [name async for name, _ in slow]
    assert names[-1] == "lagged" and "partial" not in names  # (what it could not take was dropped whole)
    assert open_subs() - before == subs  # the fresh tab still has its feed
    await fresh.aclose()
    await asyncio.gather(*feed.closing)  # (closing runs as a task of its own)
    assert feed.subs == [] and feed.ticker is None and open_subs() == before
