"""The web console in Debian's headless Chromium against the real stack: sign in with an
operator token, find a dead-lettered notification, replay it from the page, see it delivered
and its story told; and the graphs of what the status processor counted."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka import Producer
from sqlalchemy.orm import Session

from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup, free_port
from herald.infra.system_packages import require_command
from herald.ops.api_tokens import create_token
from herald.ops.notification_history import run_history_index
from herald.schemas.catalog import NOTIFICATION_STATUS, qualified
from tests.catalogs import example
from tests.integration.delivery_support import delivering, fast_settings, produce_requests
from tests.integration.relay_support import running_relay
from tests.integration.test_dead_letters import index
from tests.integration.test_status_stats import latest_counts, outcomes, produce, start_counter
from tests.support import HERALD, process_env, simulator_network, wait_until

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as shown  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[object]:
    chromium = require_command("chromium")
    driver_path = require_command("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def served_api(settings) -> Iterator[str]:
    """`herald api` on a free port; its URL once it answers."""
    served = dataclasses.replace(settings, api_port=free_port())
    server = subprocess.Popen([*HERALD, "api"], env=process_env(served), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{served.api_port}"
    try:
        wait_until(lambda: _answers(f"{url}/up"), 60, "herald api to listen")
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def ops_api(settings):
    with served_api(settings) as url:
        yield url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_dead_letter_replayed_from_the_console_is_delivered(settings, engine, log_dir, browser, ops_api):
    with Session(engine) as session, session.begin():
        token = create_token(session, "ops-ana", "operator")
    with simulator_network(log_dir, gateway_instances=1) as (network, _group):
        network.faults(network.email, fail_next=1, status=400)
        produce_requests(settings, "email", range(3))
        with delivering(fast_settings(settings, network), "email"):
            wait_until(lambda: network.accepted("email") >= 2, 60, "the two that did not fail")
            index(settings)
            with engine.connect() as conn:
                dead_id, dead_key = conn.execute(sa.text("SELECT id, key_text FROM dead_letters")).one()
            wait = WebDriverWait(browser, 30)
            browser.get(ops_api)
            browser.find_element(By.ID, "token").send_keys(token)
            browser.find_element(By.ID, "signin").click()
            wait.until(shown.text_to_be_present_in_element((By.ID, "who"), "ops-ana (operator)"))
            wait.until(shown.text_to_be_present_in_element((By.ID, "health-checks"), "dead letters"))
            browser.save_screenshot(str(log_dir / "console-health.png"))
            browser.find_element(By.CSS_SELECTOR, "nav button[data-tab=dlq]").click()
            topics = [o.get_attribute("value") for o in
                      browser.find_elements(By.CSS_SELECTOR, "#f-topic option")]
            assert topics[:3] == ["", "whatsapp", "email"], "the catalog's channels, to filter by"
            assert "registrations.events" in topics
            missing_types = [o.get_attribute("value") for o in
                             browser.find_elements(By.CSS_SELECTOR, "#m-type option")]
            assert missing_types == ["", "welcome", "upload_confirmation", "e_ticket"], "those with an SLA"
            wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, f"tr[data-id='{dead_id}']"))).click()
            wait.until(shown.text_to_be_present_in_element((By.ID, "d-error"), "ProviderRejected"))
            assert "@example.test" in browser.find_element(By.ID, "d-payload").text, "whole, for an operator"
            browser.save_screenshot(str(log_dir / "console-dlq.png"))
            browser.find_element(By.ID, "d-replay").click()
            wait.until(shown.visibility_of_element_located((By.ID, "confirm-yes"))).click()
            wait.until(shown.text_to_be_present_in_element((By.ID, "d-state"), "replayed"))
            assert "replayed 1 of 1" in browser.find_element(By.ID, "notice").text
            with running_relay(settings):
                wait_until(lambda: network.accepted("email") >= 3, 60, "the replayed notification")
        stats = network.stats("email")
    assert (stats["accepted"], stats["duplicates"]) == (3, 0)
    run_history_index(settings, example(), threading.Event(), drain=True)
    browser.find_element(By.CSS_SELECTOR, "nav button[data-tab=notifications]").click()
    browser.find_element(By.ID, "n-key").send_keys(dead_key)
    browser.find_element(By.ID, "n-apply").click()
    wait.until(shown.text_to_be_present_in_element((By.ID, "stories"), "replayed"))
    told = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#stories tbody tr")]
    assert [line.split()[1] for line in told] == ["requested", "dead_lettered", "replayed", "sent"], told
    assert "ProviderRejected" in told[1]
    browser.save_screenshot(str(log_dir / "console-notifications.png"))
    # Seed 001's "failed notifications of user 42": by a field of the triggering event alone.
    story = browser.find_element(By.CSS_SELECTOR, "#stories .story")
    subject = story.find_element(By.CSS_SELECTOR, "p.muted").text.rsplit("event ", 1)[1]
    browser.find_element(By.ID, "n-key").clear()
    browser.find_element(By.ID, "n-field").send_keys(f"name=P{int(subject.removeprefix('REG-'))}")
    wanted = [story.get_attribute("data-id")]
    browser.find_element(By.ID, "n-apply").click()
    ids = lambda b: [s.get_attribute("data-id") for s in b.find_elements(By.CSS_SELECTOR, "#stories .story")]  # noqa: E731
    # The search re-renders the list under the reader: an element read mid-render is stale, so read again.
    rerendering = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    rerendering.until(lambda b: ids(b) == wanted or None)
    _pause_from_the_console(browser, wait, log_dir)


def _pause_from_the_console(browser, wait, log_dir) -> None:
    """The Channels tab: a pause with its reason, shown with who did it, then a resume at a rate."""
    browser.find_element(By.CSS_SELECTOR, "nav button[data-tab=channels]").click()
    wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "button[data-channel=email]")))
    browser.find_element(By.ID, "c-reason").send_keys("provider down")
    browser.find_element(By.CSS_SELECTOR, "button[data-channel=email]").click()
    wait.until(shown.visibility_of_element_located((By.ID, "confirm-yes"))).click()
    wait.until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, "tr[data-channel=email]"), "paused"))
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-channel=email]").text
    assert "token:ops-ana" in row and "provider down" in row, row
    assert "running" in browser.find_element(By.CSS_SELECTOR, "tr[data-channel=whatsapp]").text
    browser.save_screenshot(str(log_dir / "console-channels.png"))
    browser.find_element(By.ID, "c-rate").send_keys("3")
    browser.find_element(By.CSS_SELECTOR, "button[data-channel=email]").click()
    wait.until(shown.visibility_of_element_located((By.ID, "confirm-yes"))).click()
    wait.until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, "tr[data-channel=email]"), "3/s"))
    history = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#channel-history tr")]
    assert [line.split()[1:3] for line in history] == [["email", "running"], ["email", "paused"]], history


def test_the_graphs_draw_what_the_status_processor_counted(settings, engine, log_dir, browser):
    """Outcomes of the last minutes counted by the real status processor, drawn per minute in the
    console: each bar the count the processor wrote."""
    settings = dataclasses.replace(settings, status_stats_flush_interval_s=0.3)
    with Session(engine) as session, session.begin():
        token = create_token(session, "graphs-viewer", "viewer")
    records = outcomes(90, datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3))
    expected = Counter((r["notification_type"], r["channel"], r["status"]) for r in records)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_counter(group, settings)
        produce(Producer(producer_config(settings.kafka_bootstrap, 30)),
                qualified(NOTIFICATION_STATUS, settings.namespace), records)
        wait_until(lambda: sum(latest_counts(settings).values()) >= len(records), 60, "every outcome counted")
    with served_api(settings) as url:
        wait = WebDriverWait(browser, 30)
        browser.get(url)
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "signin").click()
        wait.until(shown.text_to_be_present_in_element((By.ID, "who"), "graphs-viewer (viewer)"))
        browser.find_element(By.CSS_SELECTOR, "nav button[data-tab=graphs]").click()
        wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "#graph-list rect")))
        wait.until(shown.text_to_be_present_in_element((By.ID, "lag-rows"), settings.namespace))
        drawn: Counter = Counter()
        for chart in browser.find_elements(By.CSS_SELECTOR, "#graph-list .graph"):
            kind, channel = chart.get_attribute("data-series").split("/")
            for bar in chart.find_elements(By.CSS_SELECTOR, "rect"):
                status, count = bar.get_attribute("data-status"), int(bar.get_attribute("data-count"))
                drawn[(kind, channel, status)] += count
        browser.save_screenshot(str(log_dir / "console-graphs.png"))
    assert drawn == expected, "every outcome drawn once, in its series and status"
    assert len({key[:2] for key in drawn}) == 6, "three notifications on two channels"
