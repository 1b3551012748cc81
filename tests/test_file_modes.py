"""Files the console writes are readable by its own OS user only: another user (nobody) cannot read them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="reading a file as another OS user needs root and runuser (runuser -u nobody)",
)


@pytest.fixture
def open_dir():
    """A folder every user may enter (unlike pytest's tmp_path under a 0700 folder), so that only the modes of
    what the console writes inside it keep another user out."""
    path = Path(tempfile.mkdtemp(prefix="console-modes-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _nobody_reads(path: Path) -> bool:
    result = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True)
    return result.returncode == 0


def _console(var: Path, script: str, *, umask: int = 0o022) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh process with the console's development settings on ``var`` (started, as a shell
    would start it, with a permissive umask: the console must set its own)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT"}}
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings",
        CONSOLE_ENV="development",
        CONSOLE_VAR_DIR=str(var),
        CONSOLE_MODELS_DIR=str(var / "models"),
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=lambda: os.umask(umask),
    )


WRITE_EVERYTHING = """
import django, os, socket
django.setup()
from pathlib import Path
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import send_mail
from django.core.management import call_command
from django.db import connection

call_command("migrate", verbosity=0)                                    # the database (and its -wal)
from notifications.sms import DevelopmentBackend                        # the development SMS table
DevelopmentBackend().send(to="+8613800138000", body="code 123456", params={"code": "123456"}, key="t",
                          kind="verification", user=None)
default_storage.save("datasets/1/train.jsonl", ContentFile(b'{"messages": []}'))   # media
default_storage.save("jobs/1/task/checkpoint-1/adapter.safetensors", ContentFile(b"weights"))
send_mail("s", "b", "a@example.com", ["b@example.com"])                 # mail (file backend)
logs = Path(settings.VAR_DIR) / "serving" / "logs"                       # logs and pid files written with open()
logs.mkdir(parents=True, exist_ok=True)
(logs / "instance-1.log").write_text("a log line")
(Path(settings.VAR_DIR) / "worker.pid").write_text(str(os.getpid()))
sock = socket.socket(socket.AF_UNIX)                                    # a socket
sock.bind(str(Path(settings.VAR_DIR) / "test.sock"))
with connection.cursor() as cursor:                                      # keep the -wal while checking
    cursor.execute("SELECT count(*) FROM notifications_sentsms")
print("written")
import sys; sys.stdout.flush(); sys.stdin.read()
"""


def test_what_the_console_writes_is_unreadable_to_other_users(open_dir):
    var = open_dir / "var"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT"}}
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings",
        CONSOLE_ENV="development",
        CONSOLE_VAR_DIR=str(var),
        CONSOLE_MODELS_DIR=str(var / "models"),
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITE_EVERYTHING],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "written", proc.stderr.read() if proc.poll() is not None else line
        written = sorted(p for p in var.rglob("*"))
        names = {p.relative_to(var).as_posix() for p in written}
        for expected in (
            "console.sqlite3",
            "console.sqlite3-wal",
            "secret_key",
            "media/datasets/1/train.jsonl",
            "media/jobs/1/task/checkpoint-1/adapter.safetensors",
            "serving/logs/instance-1.log",
            "worker.pid",
            "test.sock",
        ):
            assert expected in names, sorted(names)
        assert any(name.startswith("mail/") for name in names), sorted(names)
        for path in [var, *written]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert not mode & 0o077, f"{path} is {mode:04o}: other users have access"
        for path in written:
            if path.is_file():
                assert not _nobody_reads(path), f"nobody could read {path}"
        assert not _nobody_reads(var / "console.sqlite3")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_start_fixes_and_reports_what_an_older_version_left_readable(open_dir):
    var = open_dir / "var"
    old = {
        "console.sqlite3": b"SQLite format 3",
        "media/datasets/1/train.jsonl": b"{}",
        "mail/1.log": b"mail",
        "serving/logs/instance-1.log": b"log",
    }
    for name, content in old.items():
        path = var / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        for parent in [path.parent, *path.parent.parents]:
            if parent == open_dir:
                break
            parent.chmod(0o755)
        path.write_bytes(content)
        path.chmod(0o644)
    assert _nobody_reads(var / "console.sqlite3"), "the test's own setup should be readable before the fix"

    result = _console(var, "import django; django.setup()")
    assert result.returncode == 0, result.stderr
    assert "were readable by other users of this machine" in result.stderr
    assert "console.sqlite3" in result.stderr
    for name in old:
        path = var / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not _nobody_reads(path)
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert stat.S_IMODE((var / "media" / "datasets").stat().st_mode) == 0o700

    # Started again: nothing left to fix, nothing said.
    again = _console(var, "import django; django.setup()")
    assert "readable by other users" not in again.stderr
