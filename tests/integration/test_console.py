"""The web console in Debian's headless Chromium against the real stack: sign in with an
operator token, find a dead-lettered notification, replay it from the page, see it delivered."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.infra.processes import free_port
from herald.infra.system_packages import require_command
from herald.ops.api_tokens import create_token
from herald.ops.notification_history import run_history_index
from tests.catalogs import example
from tests.integration.delivery_support import delivering, fast_settings, produce_requests
from tests.integration.relay_support import running_relay
from tests.integration.test_dead_letters import index
from tests.support import HERALD, process_env, simulator_network, wait_until

webdriver = pytest.importorskip("selenium.webdriver")
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


@pytest.fixture
def ops_api(settings):
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
