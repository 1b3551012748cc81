from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import ApiKey, User

from . import services
from .jobs_support import _training_worker, tiny_base, tiny_model_dir, training_worker  # noqa: F401 (fixtures)
from .notifications_support import fake_provider, smtp_server  # noqa: F401 (fixtures)

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def _flush_retrying_a_deadlock():
    """The flush after a transactional test tries again when PostgreSQL chose it as a deadlock's victim.

    A worker process of the session (Celery, an agent) may still be finishing a transaction the test started
    (validating an upload, recording a heartbeat); its row locks and the flush's TRUNCATE can deadlock. The
    worker's transaction ends either way, so the second try finds the tables free."""
    import time

    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    handle = flush.Command.handle

    def handle_retrying(self, **options):
        for attempt in range(4):
            try:
                return handle(self, **options)
            except CommandError as exc:
                if attempt == 3 or "deadlock" not in str(exc.__cause__).lower():
                    raise
                time.sleep(0.5)

    flush.Command.handle = handle_retrying


_flush_retrying_a_deadlock()


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    proc = services.start_embedded_redis()
    services.flush_redis()
    yield
    services.stop(proc)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A real Celery worker process on the default and serving queues, using the test database.

    Training has its own worker (tests/jobs_support.py: training_worker), one task at a time."""
    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    proc = services.start_worker(db_name, queues="default,serving")
    yield proc
    services.stop(proc)


@pytest.fixture(autouse=True)
def _english():
    """Each test starts in English: a request that activated Chinese must not leak into the next test."""
    from django.utils import translation

    translation.activate("en")
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _no_cached_routes():
    """The gateway's cached routes are the process's: a test's rolled-back rows must not be routed in the next."""
    from deployments import routecache

    routecache.forget()


@pytest.fixture(autouse=True)
def _catalog(request):
    """Transactional tests flush the tables a data migration filled: seed the catalog again."""
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db", "live_server"} & set(
        request.fixturenames
    )
    if uses_db:
        request.getfixturevalue("db")
        from modelcards.catalog import seed_catalog

        seed_catalog(update=False)


def make_user(username: str, **extra) -> User:
    return User.objects.create_user(username=username, password=f"{username}-pass-123", **extra)


@pytest.fixture
def alice(db) -> User:
    """The owner."""
    return make_user("alice", email="alice@example.com")


@pytest.fixture
def alice_media(settings, alice):
    """alice's upload folder under the real media root, emptied around the test.

    For transactional tests that upload: a Celery worker started by another test module may validate
    the uploads too, and it must find the files where the server put them. No validation may still be
    writing when the tables are flushed (the worker's transaction and the flush's TRUNCATE deadlock on
    PostgreSQL), so the test waits for them at teardown.
    """
    from .datasets_support import validate_all

    folder = Path(settings.MEDIA_ROOT) / "datasets" / str(alice.pk)
    shutil.rmtree(folder, ignore_errors=True)
    yield folder
    validate_all(alice)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def bob(db) -> User:
    """Another user, who must never see alice's things."""
    return make_user("bob", email="bob@example.com")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def alice_key(alice) -> str:
    _key, text = ApiKey.create_for(user=alice, name="tests")
    return text


@pytest.fixture
def sdk(live_server, alice_key):
    """The real zhipuai SDK pointed at the live test server, with alice's key (Bearer mode)."""
    from zhipuai import ZhipuAI

    return ZhipuAI(api_key=alice_key, base_url=f"{live_server.url}/api/paas/v4", max_retries=0)


@pytest.fixture(scope="module")
def browser():
    """Chromium through sync Playwright, for one test module.

    The suite runs with Django's async safety on: the ORM refuses to run in a thread whose event loop runs, so a
    blocking call made from async code fails its test. Sync Playwright keeps its event loop running in the test
    thread for as long as it lives, where the browser tests (their fixtures and the flushes after them too) use
    the ORM synchronously, not from async code. So the check is off only while a browser runs, which is only in
    the modules of browser tests."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"Chromium not found at {CHROMIUM} and REQUIRE_BROWSER is set")
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium chromium-driver")
    from playwright.sync_api import sync_playwright

    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                ],
            )
            yield browser
            browser.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    path = Path(settings.VAR_DIR) / "screenshots"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
