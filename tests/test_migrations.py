"""The model-card move keeps every row: migrate a database holding data from before it to the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


def _scratch_database(tmp_path) -> tuple[str, Callable[[], None]]:
    """A fresh empty database of the kind the suite runs on, and how to drop it."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return f"sqlite:///{tmp_path / 'migration.sqlite3'}", lambda: None
    import dj_database_url
    import psycopg

    settings = dj_database_url.parse(url)
    name = f"migration_{uuid.uuid4().hex[:10]}"

    def admin() -> psycopg.Connection:
        return psycopg.connect(
            host=settings["HOST"],
            port=settings["PORT"] or 5432,
            user=settings["USER"],
            password=settings["PASSWORD"],
            dbname=settings["NAME"],
            autocommit=True,
        )

    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.rsplit("/", 1)[0] + "/" + name, drop


def test_the_model_card_move_keeps_every_row(tmp_path):
    url, drop = _scratch_database(tmp_path)
    try:
        env = {**os.environ, "DATABASE_URL": url, "CONSOLE_VAR_DIR": str(tmp_path / "var")}
        env.pop("CONSOLE_TEST_WORKER_DB", None)
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "scripts" / "migrate_with_data.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
        )
    finally:
        drop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["bases_after"] == found["bases_before"] and found["operator_model_kept"]
    assert found["job_base"] == "operator-model"
    assert found["job_result"] == "ft:operator:x:1" and found["card_job"] == "ftjob-migrated"
    assert found["card_tokens"] == 99
    assert found["dataset_base"] == "smollm2-135m-instruct"
    assert found["token_count"] == [["smollm2-135m-instruct", 1234]]
    assert found["seeded_architecture"] == "llama"
    assert found["old_tables_left"] == []
