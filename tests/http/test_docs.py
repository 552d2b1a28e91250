"""docs/http.md, run as written: the curl session, the EventSource snippet in headless
Chromium on another origin, and the connect-web example in Node.js, each against a real
``runguard serve`` with the documented address swapped for the test server's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from runguard.v1 import runguard_pb2 as pb
from tests.conftest import Served
from tests.http.browser import chromium
from tests.http.test_security import http_port_of
from tests.integration.support import begin_request
from tests.interop.node_run import NODE_DIR
from tests.stubs import sync_stub

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "http.md"
ADDRESS = "127.0.0.1:8080"
PAGE_ORIGIN = "http://localhost:3000"


def _environment() -> dict[str, str]:
    """The test's environment with this interpreter's bin directory first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def section(title: str) -> str:
    """The doc's text under ``## title``, up to the next second-level heading."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/http.md has no section {title!r}"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def serve_as_documented(served: Callable[..., Served], line: str, **swap: str) -> Served:
    """Start ``runguard serve`` with a documented command line, the port made free."""
    words = line.split()
    assert words[:2] == ["runguard", "serve"], line
    args = [swap.get(word, word) for word in words[2:]]
    return served(*[("127.0.0.1:0" if a == ADDRESS else a) for a in args])


def test_quick_start_serves_http_as_documented(served: Callable[..., Served]) -> None:
    """The doc's first command starts the HTTP front next to the gRPC port."""
    introduction = DOC.read_text(encoding="utf-8").split("\n## ")[0]
    (command,) = blocks(introduction, "sh")
    server = serve_as_documented(served, command.strip())

    assert http_port_of(server) > 0


def test_curl_session_gets_the_documented_answers(served: Callable[..., Served]) -> None:
    """Granted, then IN_FLIGHT with the holder, then a 400 naming guard and ttl, then an
    event stream with a snapshot holding the run."""
    server = served("--http-listen", "127.0.0.1:0")
    port = http_port_of(server)
    script = "\n".join(
        block.replace(ADDRESS, f"127.0.0.1:{port}") + "\necho '@@'"
        for block in blocks(section("Try it with curl"), "sh")
    )

    done = subprocess.run(
        ["bash", "-e", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    begin, again, bad, events, _ = done.stdout.split("@@\n")
    granted = json.loads(begin)["granted"]
    assert granted["leaseToken"]
    rejected = json.loads(again)["rejected"]
    assert rejected["reason"] == "REJECTION_REASON_IN_FLIGHT"
    assert [h["operationId"] for h in rejected["holders"]] == [granted["run"]["operationId"]]
    error_text, status = bad.strip().rsplit("\n", 1)
    assert status == "HTTP 400"
    assert json.loads(error_text)["code"] == "invalid_argument"
    assert "guard:" in json.loads(error_text)["message"]
    assert "ttl:" in json.loads(error_text)["message"]
    assert events.startswith("retry: 1000\n\n")
    data = next(line for line in events.splitlines() if line.startswith("data: "))
    snapshot = json.loads(data[len("data: ") :])["snapshot"]
    assert snapshot["guards"][0]["holders"][0]["operationId"] == granted["run"]["operationId"]


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    """Serves one HTML page from localhost on a free port (another origin than RunGuard's)."""
    servers: list[ThreadingHTTPServer] = []

    def serve(html: str) -> int:
        (tmp_path / "index.html").write_text(html, encoding="utf-8")

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(tmp_path), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:  # the base's name
                """Quiet."""

        server = ThreadingHTTPServer(("localhost", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_event_source_snippet_follows_a_guard_from_another_origin(
    served: Callable[..., Served], page_server: Callable[[str], int], tmp_path: Path
) -> None:
    """The ten-line snippet, on a page of another origin allowed by --http-cors-origin,
    lists a holder taken over native gRPC and drops it when the run ends."""
    text = section("Watch from a web page")
    (html,) = blocks(text, "html")
    (command,) = blocks(text, "sh")
    page_port = page_server(html)  # the address is swapped below, once RunGuard has a port
    origin = f"http://localhost:{page_port}"
    server = serve_as_documented(served, command.strip(), **{PAGE_ORIGIN: origin})
    port = http_port_of(server)
    (tmp_path / "index.html").write_text(html.replace(ADDRESS, f"127.0.0.1:{port}"))
    browser: webdriver.Chrome = chromium(tmp_path / "profile")
    stub = sync_stub(grpc.insecure_channel(server.address))
    try:
        browser.get(f"{origin}/index.html")
        granted = stub.Begin(begin_request("from-grpc")).granted
        WebDriverWait(browser, 10, 0.02).until(lambda d: listed(d) == ["from-grpc"])
        assert "until 20" in listed_text(browser)  # the lease's end, an RFC 3339 time
        stub.End(
            pb.EndRequest(
                guard="generate", operation_id="from-grpc", lease_token=granted.lease_token
            )
        )
        WebDriverWait(browser, 10, 0.02).until(lambda d: listed(d) == [])
    finally:
        browser.quit()


def listed(driver: webdriver.Chrome) -> list[str]:
    """The operation_ids the snippet lists."""
    items: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#holders li')]"
        ".map(li => li.textContent.split(' ')[0])"
    )
    return items


def listed_text(driver: webdriver.Chrome) -> str:
    """The snippet's list as text."""
    return str(driver.execute_script("return document.getElementById('holders').textContent"))


def test_connect_web_example_runs_in_node(served: Callable[..., Served], tmp_path: Path) -> None:
    """The generation commands and the connect-web example: granted and ended, then a Watch
    snapshot (the npm install line names the versions the tests install)."""
    text = section("Call it from a web app (connect-web)")
    (setup,), (example,) = blocks(text, "sh"), blocks(text, "js")
    mkdir, install, generate = setup.strip().splitlines()
    versions = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for package in install.split()[2:]:
        name, _, version = package.rpartition("@")
        assert versions.get(name) == version, f"{package} is not what the tests install"
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copytree(ROOT / "protos", clone / "protos")
    shutil.copy(ROOT / "buf.yaml", clone / "buf.yaml")
    (clone / "web").mkdir()
    (clone / "web" / "node_modules").symlink_to(NODE_DIR / "node_modules")
    done = subprocess.run(
        ["bash", "-e", "-c", f"{mkdir}\n{generate}"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_environment(),
    )
    assert done.returncode == 0, done.stderr
    server = served("--http-listen", "127.0.0.1:0")
    app = clone / "web" / "app.mjs"
    app.write_text(example.replace(ADDRESS, f"127.0.0.1:{http_port_of(server)}"))

    node = shutil.which("node")
    assert node is not None
    ran = subprocess.run(
        [node, str(app)], cwd=app.parent, capture_output=True, text=True, timeout=60, check=False
    )

    assert ran.returncode == 0, ran.stderr
    first, second = ran.stdout.splitlines()
    assert re.fullmatch(r"holding web-1, fencing token \d+", first), first
    assert second.startswith("snapshot ")


@pytest.mark.parametrize("language", ["html", "js"])
def test_the_readmes_web_snippets_are_the_tested_ones(language: str) -> None:
    """Each html and js block of the README is (a part of) one that this module runs."""
    readme = blocks((ROOT / "README.md").read_text(encoding="utf-8"), language)
    tested = blocks(DOC.read_text(encoding="utf-8"), language)
    assert readme
    for block in readme:
        assert any(block in whole for whole in tested), block
