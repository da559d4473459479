"""The live page in real headless Chromium (Debian's chromium + chromedriver) against a live `streamer serve`.

The page's data is produced to the output topics of a real Kafka broker as the service's own
event models (the read model's agreement with the real service is test_api.py's job): the
test checks what a person sees. Screenshots (desktop and phone width) go to the test's
output folder; docs/live-page.png in the README is one of them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from streamer.domain.events import (
    AssignmentEvent,
    AssignmentReason,
    ClusterEvent,
    ClusterEventType,
)
from streamer.domain.headline import Headline
from tests.integration.serving import serve_factory  # noqa: F401 (fixture)
from tests.integration.test_service import produce
from tests.plugins.streamer_fixtures import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOW = 1_714_069_444_000
MIN = 60_000
STORIES = {
    1: (["penguins", "zoo", "zurich", "tram"], "Penguins escape from Zurich zoo and ride a city tram", 14, 25),
    2: (["election", "polls", "turnout"], "Polls close with record turnout in snap election", 9, 50),
    3: (["storm", "flights", "cancelled"], "Storm grounds flights across northern Europe", 6, 170),
    4: (["chip", "export", "rules"], "New chip export rules take effect", 4, 100),
}
OUTLETS = ["Reuters", "AP", "BBC", "Le Monde", "NHK", "Al Jazeera", "DW"]


def _events(cid: int, keywords: list[str], title: str, n: int, spacing_min: int, emerging: bool = False) -> tuple[list[Any], list[Any]]:
    cluster = ClusterEvent.make(
        type=ClusterEventType.CREATED, cluster_id=cid, run_id=1, size=n, keywords=[] if emerging else keywords,
        exemplar_id=f"s{cid}-0", exemplar_title=title, emerging=emerging,
    )
    assignments = []
    for i in range(n):
        headline = Headline(
            id=f"s{cid}-{i}", title=f"{title} ({OUTLETS[i % len(OUTLETS)]} update {i + 1})",
            published_at_ms=NOW - (n - i) * spacing_min * MIN // 4, source=OUTLETS[(i * cid) % len(OUTLETS)],
        )
        assignments.append(AssignmentEvent.for_cluster(
            headline=headline, cluster_id=cid, probability=0.9, run_id=1, reason=AssignmentReason.ARRIVAL))
    return [cluster], assignments


def _publish(bootstrap: str, settings: dict[str, Any], clusters: list[Any], assignments: list[Any]) -> None:
    k = settings["kafka"]
    produce(bootstrap, k["cluster_events_topic"], [e.model_dump_json().encode() for e in clusters])
    produce(bootstrap, k["assignments_topic"], [e.model_dump_json().encode() for e in assignments])


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _visible_topics(driver: webdriver.Chrome) -> list[int]:
    # Read in one script: the list is re-rendered whenever the model changes (no stale handles).
    return driver.execute_script(
        "return [...document.querySelectorAll('#topics .topic')].filter(e => e.offsetParent !== null)"
        ".map(e => Number(e.dataset.id));"
    )


def _card_text(driver: webdriver.Chrome, cid: int) -> str:
    return driver.execute_script(f"const e = document.querySelector('#topics .topic[data-id=\"{cid}\"]'); return e ? e.innerText : '';")


def test_live_page_lists_searches_opens_and_updates_without_reload(
    kafka_bootstrap_servers: str, serve_factory: Any, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap_servers)
    clusters, assignments = [], []
    for cid, (keywords, title, n, spacing) in STORIES.items():
        c, a = _events(cid, keywords, title, n, spacing)
        clusters += c
        assignments += a
    serve = serve_factory(settings, ["--no-match"]).start()
    _publish(kafka_bootstrap_servers, settings, clusters, assignments)
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)

    browser.get(serve.url + "/?poll=500")
    wait.until(lambda d: len(_visible_topics(d)) == 4)
    assert _visible_topics(browser)[0] == 1  # the fastest-growing story leads
    first = _card_text(browser, 1)
    assert "penguins" in first and "14 headlines" in first and "7 sources" in first
    assert browser.execute_script("return document.querySelector('.topic[data-id=\"1\"] svg.spark polyline').getAttribute('points');")
    browser.execute_script("window.__sameDocument = true;")  # a reload would drop it
    browser.save_screenshot(str(tmp_path / "page.png"))

    search = browser.find_element(By.ID, "search")
    search.send_keys("ELECTION")
    wait.until(lambda d: _visible_topics(d) == [2])
    search.clear()
    search.send_keys(" ")  # an input event with an empty query shows everything again
    wait.until(lambda d: len(_visible_topics(d)) == 4)

    browser.find_element(By.CSS_SELECTOR, '#topics .topic[data-id="3"]').click()
    wait.until(lambda d: d.find_element(By.ID, "topic-view").is_displayed())
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members li")) == 6)
    assert "storm" in browser.find_element(By.ID, "topic-head").text
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline rect")
    newest = browser.find_elements(By.CSS_SELECTOR, "#members li")[0].get_attribute("data-id")
    assert newest == "s3-5"
    browser.save_screenshot(str(tmp_path / "topic.png"))
    browser.find_element(By.ID, "back").click()
    wait.until(lambda d: d.find_element(By.ID, "list-view").is_displayed())

    # A story breaks: its events reach Kafka and the page shows it without a reload.
    c, a = _events(5, [], "Volcano erupts near Reykjavik, flights diverted", 5, 1, emerging=True)
    _publish(kafka_bootstrap_servers, settings, c, a)
    wait.until(lambda d: 5 in _visible_topics(d))
    card = _card_text(browser, 5)
    assert "emerging" in card and "Volcano" in card
    assert browser.execute_script("return window.__sameDocument === true;")
    browser.save_screenshot(str(tmp_path / "page-updated.png"))

    # Readable on a phone: nothing wider than the screen.
    browser.set_window_size(390, 844)
    time.sleep(0.5)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;")
    browser.save_screenshot(str(tmp_path / "phone.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert serve.terminate() == 0
