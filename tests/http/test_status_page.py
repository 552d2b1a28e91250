"""The status page at ``/`` in real headless Chromium: live holders from one EventSource,
an exact count of changes across a server restart, and a screenshot on a phone screen."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Served, serve_process
from tests.http.browser import chromium
from tests.http.test_security import http_port_of
from tests.integration.support import begin_request
from tests.security.conftest import Tokens
from tests.stubs import sync_stub

pytestmark = pytest.mark.interop

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
"""Screenshots the tests leave for a person to look at (git-ignored)."""

WAIT = 10.0
"""Seconds a page may take to show what a test waits for (generous: CI machines are slow)."""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """One headless chromium with a phone-sized viewport; quit after the test."""
    driver = chromium(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


def count_event_sources(driver: webdriver.Chrome) -> None:
    """Make every page the browser opens count the EventSources it creates
    (``window.eventSources``)."""
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.eventSources = 0; const Original = window.EventSource;"
            "window.EventSource = class extends Original {"
            "constructor(...args) { super(...args); window.eventSources += 1; } };"
        },
    )


def stub_of(server: Served) -> Any:
    """A native gRPC stub to the server (the page must see what gRPC clients do)."""
    return sync_stub(grpc.insecure_channel(server.address))


# The page re-renders on every event, so it is read in one script, never through
# element handles that a render may replace under them.


def holders(driver: webdriver.Chrome, guard: str) -> list[str]:
    """The operation_ids the page lists under a guard."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(`[data-guard='${arguments[0]}'] .holder`)]"
        ".map(item => item.dataset.operationId)",
        guard,
    )
    return found


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    """The text of one element of the page."""
    return str(
        driver.execute_script("return document.getElementById(arguments[0]).innerText", element_id)
    )


def texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    """The text of every element a CSS selector picks."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", selector
    )
    return found


def until(driver: webdriver.Chrome, check: Callable[[webdriver.Chrome], bool]) -> None:
    """Wait for the page to satisfy ``check``."""
    WebDriverWait(driver, WAIT, poll_frequency=0.02).until(check)


def test_page_shows_a_grpc_holder_live_and_drops_it_on_end(
    served: Callable[..., Served], browser: webdriver.Chrome
) -> None:
    """A Begin over native gRPC appears on the open page with its labels and a countdown to
    its lease's end, and leaves on End; the page holds exactly one EventSource."""
    server = served("--http-listen", "127.0.0.1:0")
    count_event_sources(browser)
    browser.get(f"http://127.0.0.1:{http_port_of(server)}/")
    until(browser, lambda d: text_of(d, "status") == "live")
    stub = stub_of(server)

    request = begin_request("page-run", guard="generate", ttl=600)
    request.labels["user"] = "ada"
    started = time.monotonic()
    granted = stub.Begin(request).granted
    until(browser, lambda d: holders(d, "generate") == ["page-run"])
    shown_after = time.monotonic() - started
    print(f"holder shown {shown_after * 1000:.0f} ms after Begin returned")

    (card,) = texts(browser, '[data-guard="generate"]')
    assert "1/1 held" in card
    assert "user=ada" in card
    assert re.search(r"expires in (10:00|9:[0-5]\d)", card)  # counts down the 600 s lease
    assert browser.execute_script("return window.eventSources") == 1

    stub.End(
        pb.EndRequest(guard="generate", operation_id="page-run", lease_token=granted.lease_token)
    )
    until(browser, lambda d: holders(d, "generate") == [])
    assert "0/1 held" in texts(browser, '[data-guard="generate"]')[0]
    changes = texts(browser, "#changes li")
    assert "released (ended) page-run" in changes[0]
    assert "acquired page-run" in changes[1]


def test_page_counts_every_change_across_a_restart(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """With a sqlite store, the page's EventSource resumes after a server restart and has
    seen every change exactly once (replayed, never resynced)."""
    store = f"sqlite:///{tmp_path / 'runguard.db'}"
    first = serve_process(tmp_path, "--store", store, "--http-listen", "127.0.0.1:0")
    port = http_port_of(first)
    second: Served | None = None
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        until(browser, lambda d: text_of(d, "status") == "live")
        pairs(stub_of(first), "before", 3)
        until(browser, lambda d: text_of(d, "change-count") == "6")

        first.process.terminate()
        assert first.process.wait(10) == 0
        second = serve_process(tmp_path, "--store", store, "--http-listen", f"127.0.0.1:{port}")
        pairs(stub_of(second), "after", 2)  # made while the page is still reconnecting

        until(browser, lambda d: text_of(d, "change-count") == "10")
        time.sleep(0.5)  # nothing more arrives: no change twice
        assert text_of(browser, "change-count") == "10"
        assert text_of(browser, "resync-count") == "0"
        assert text_of(browser, "status") == "live"
    finally:
        for served in (first, second):
            if served is not None:
                served.stop()


def pairs(stub: Any, prefix: str, count: int) -> None:
    """``count`` Begin/End pairs over native gRPC: two changes each."""
    for number in range(count):
        operation = f"{prefix}-{number}"
        granted = stub.Begin(begin_request(operation, guard="counted")).granted
        assert granted.lease_token, f"{operation} was not granted"
        stub.End(
            pb.EndRequest(guard="counted", operation_id=operation, lease_token=granted.lease_token)
        )


def test_page_is_readable_on_a_phone(
    served: Callable[..., Served], browser: webdriver.Chrome
) -> None:
    """On a 390 px wide screen the page has no horizontal scroll; a screenshot is saved
    in tests/artifacts for a person to look at."""
    server = served("--http-listen", "127.0.0.1:0")
    stub = stub_of(server)
    for number, guard in enumerate(["generate", "generate", "export/reports", "build"]):
        request = begin_request(f"op-{number}-{'x' * 24}", guard=guard, ttl=300 + number * 60)
        request.labels["user"] = f"user-{number}"
        stub.Begin(request)
    browser.get(f"http://127.0.0.1:{http_port_of(server)}/")
    until(browser, lambda d: len(texts(d, ".holder")) == 3)
    stub.Begin(begin_request("deploy-1", guard="deploy"))
    until(browser, lambda d: len(texts(d, ".holder")) == 4)

    width = browser.execute_script("return document.documentElement.scrollWidth")
    viewport = browser.execute_script("return window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "status-page-phone.png"))

    assert viewport == 390
    assert width <= viewport
    font = browser.execute_script(
        "return parseFloat(getComputedStyle(document.querySelector('.holder .op')).fontSize)"
    )
    assert font >= 12
    assert json.loads(browser.execute_script("return JSON.stringify(document.title)")) == "RunGuard"


def log_in_as_watcher(browser: webdriver.Chrome, server: Served, tokens: Tokens) -> None:
    """Open the page of a server with tokens, see it ask for one, and give the watcher's."""
    browser.get(f"http://127.0.0.1:{http_port_of(server)}/")
    until(browser, lambda d: text_of(d, "status") == "needs a token")
    browser.find_element(By.ID, "token").send_keys(tokens.watcher)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    until(browser, lambda d: text_of(d, "status") == "live")


def test_page_asks_for_a_token_and_watches_with_the_cookie(
    served: Callable[..., Served], browser: webdriver.Chrome, tokens: Tokens
) -> None:
    """Against a server with tokens the page asks for one; a watcher's token is traded for
    the HttpOnly watch cookie, which its EventSource then uses (the script cannot read it)."""
    server = served("--http-listen", "127.0.0.1:0", "--auth-tokens", str(tokens.path))
    log_in_as_watcher(browser, server, tokens)
    runner = sync_stub(grpc.insecure_channel(server.address))
    runner.Begin(begin_request("tokened"), metadata=(("authorization", f"Bearer {tokens.runner}"),))

    until(browser, lambda d: holders(d, "generate") == ["tokened"])
    assert browser.execute_script("return document.cookie") == ""
    assert "worker-7" in texts(browser, '[data-guard="generate"]')[0]


def test_page_shows_progress_and_cancels_a_run_without_freeing_its_slot(
    served: Callable[..., Served], browser: webdriver.Chrome
) -> None:
    """A holder's progress shows as a bar with its message (a screenshot is saved in
    tests/artifacts); the Cancel button marks the run (its holder's KeepAlive says so)
    while it keeps its slot, until it Ends cancelled."""
    server = served("--http-listen", "127.0.0.1:0")
    stub = stub_of(server)
    granted = stub.Begin(begin_request("page-job", guard="generate", ttl=600)).granted
    held = pb.KeepAliveRequest(
        guard="generate", operation_id="page-job", lease_token=granted.lease_token
    )
    report = pb.KeepAliveRequest()
    report.CopyFrom(held)
    report.progress.fraction = 0.4
    report.progress.message = "frame 4 of 10"
    stub.KeepAlive(report)
    browser.get(f"http://127.0.0.1:{http_port_of(server)}/")
    until(browser, lambda d: holders(d, "generate") == ["page-job"])

    bar = browser.execute_script(
        "return document.querySelector(\"[data-guard='generate'] .holder progress\").value"
    )
    (progress,) = texts(browser, "[data-guard='generate'] .holder .progress")
    assert bar == pytest.approx(0.4)
    assert "40%" in progress
    assert "frame 4 of 10" in progress
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "status-page-progress.png"))

    browser.find_element(By.CSS_SELECTOR, "[data-guard='generate'] .holder .cancel").click()
    until(browser, lambda d: bool(texts(d, "[data-guard='generate'] .cancel-requested")))

    assert stub.KeepAlive(held).cancel_requested
    assert holders(browser, "generate") == ["page-job"]  # asked to stop, still holding
    assert "1/1 held" in texts(browser, '[data-guard="generate"]')[0]
    assert text_of(browser, "action-error") == ""
    end = pb.EndRequest(
        guard="generate",
        operation_id="page-job",
        lease_token=granted.lease_token,
        outcome=pb.RUN_OUTCOME_CANCELLED,
    )
    stub.End(end)
    until(browser, lambda d: holders(d, "generate") == [])
    changes = texts(browser, "#changes li")
    assert "released (ended) page-job" in changes[0]
    assert "cancel_requested page-job" in changes[1]


def test_page_says_why_a_cancel_was_refused(
    served: Callable[..., Served], browser: webdriver.Chrome, tokens: Tokens
) -> None:
    """With a watcher's token, the Cancel button is refused by the server and the page says
    so; the run is not marked."""
    server = served("--http-listen", "127.0.0.1:0", "--auth-tokens", str(tokens.path))
    log_in_as_watcher(browser, server, tokens)
    runner = sync_stub(grpc.insecure_channel(server.address))
    metadata = (("authorization", f"Bearer {tokens.runner}"),)
    runner.Begin(begin_request("theirs", guard="generate"), metadata=metadata)
    until(browser, lambda d: holders(d, "generate") == ["theirs"])

    browser.find_element(By.CSS_SELECTOR, "[data-guard='generate'] .holder .cancel").click()
    until(browser, lambda d: text_of(d, "action-error") != "")

    assert "Cancel needs the role run or admin" in text_of(browser, "action-error")
    run = runner.GetRun(
        pb.GetRunRequest(guard="generate", operation_id="theirs"), metadata=metadata
    ).run
    assert not run.cancel_requested
