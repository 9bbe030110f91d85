"""Browser fixtures: a live Machinery with a completed and a failed event, and headless Chromium from Debian."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from machinery.app import create_app
from machinery.serving import ServerThread, free_port
from tests.conftest import EXAMPLE_TEXT, ROOT, register_examples

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: run tests/browser/install-chromium.sh as root (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing: pip install -r requirements_dev.txt"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    if reason is None:
        return
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


class Live:
    """A Machinery served on 127.0.0.1 with the examples, a completed event and a failed one."""

    def __init__(self, app, server, completed: str, failed: str):
        self.app, self.server = app, server
        self.completed, self.failed = completed, failed

    @property
    def url(self) -> str:
        return self.server.url.rstrip("/")

    def event(self, event_id: str) -> dict:
        return self.app.test_client().get(f"/events/{event_id}").get_json()

    def fail_one(self) -> str:
        """Send one more event that fails, for a test of its own."""
        response = self.app.test_client().post("/e/broken-flow", json={"data": {"message": "again"}})
        assert response.status_code == 502, response.get_json()
        return response.get_json()["event_id"]


@pytest.fixture(scope="module")
def live(example_services):
    app = create_app({"MONGO_URI": "mongomock://localhost/machinery-browser", "EMBEDDED_WORKERS": 1,
                      "POLL_S": 0.05})
    client = app.test_client()
    register_examples(client, example_services)
    # A service nobody listens for, tried once, so its event fails at once (and fails again on retry).
    broken = {"name": "broken", "address": f"http://127.0.0.1:{free_port()}/", "description": HOSTILE,
              "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}],
              "retry": {"max_attempts": 1}, "timeout_s": 2}
    assert client.post("/services", json=broken).status_code == 201
    flow = {"name": "broken-flow", "services": ["upper", "broken"], "description": HOSTILE,
            "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}]}
    assert client.post("/workflows", json=flow).status_code == 201
    completed = client.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}})
    assert completed.status_code == 201, completed.get_json()
    failed = client.post("/e/broken-flow", json={"data": {"message": HOSTILE}})
    assert failed.status_code == 502, failed.get_json()
    server = ServerThread(app).start()
    try:
        yield Live(app, server, completed.get_json()["event_id"], failed.get_json()["event_id"])
    finally:
        server.stop()
        app.extensions["machinery"].close(grace_s=2)


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_page(browser):
    """Open pages in fresh contexts (viewport width, JavaScript on or off); all closed after the test."""
    contexts = []

    def opener(width: int = 1280, javascript: bool = True):
        context = browser.new_context(viewport={"width": width, "height": 900}, java_script_enabled=javascript)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield opener
    for context in contexts:
        context.close()


def shoot(page, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
