"""The admin site, and settings that fail loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    dropped = {"SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "CONSOLE_ENV", "DEBUG"}
    full_env = {k: v for k, v in os.environ.items() if k not in dropped}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_to_start_without_secret_key(tmp_path):
    result = _run(
        {"CONSOLE_ENV": "production", "ALLOWED_HOSTS": "example.com", "CONSOLE_VAR_DIR": str(tmp_path)}, "check"
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


GOOD_KEY = "x" * 20 + "a-long-random-production-secret-key-for-the-test-0123456789"


def test_production_refuses_to_start_with_debug_on(tmp_path):
    result = _run(
        {
            "CONSOLE_ENV": "production",
            "ALLOWED_HOSTS": "example.com",
            "CONSOLE_VAR_DIR": str(tmp_path),
            "SECRET_KEY": GOOD_KEY,
            "DEBUG": "true",
        },
        "check",
    )
    assert result.returncode != 0
    assert "DEBUG is on in production (CONSOLE_ENV=production)" in result.stderr
    assert "unset DEBUG or set DEBUG=false" in result.stderr


@pytest.mark.parametrize("key", ["short-secret", "ab" * 30, "django-insecure-" + "k3y" * 20])
def test_production_refuses_to_start_with_a_weak_secret_key(tmp_path, key):
    result = _run(
        {
            "CONSOLE_ENV": "production",
            "ALLOWED_HOSTS": "example.com",
            "CONSOLE_VAR_DIR": str(tmp_path),
            "SECRET_KEY": key,
        },
        "check",
    )
    assert result.returncode != 0
    assert f"SECRET_KEY is too weak for production (CONSOLE_ENV=production): it has {len(key)} characters" in (
        result.stderr
    )
    assert "at least 50 random characters" in result.stderr


def test_an_unknown_training_precision_is_refused_at_start(tmp_path):
    result = _run({"CONSOLE_VAR_DIR": str(tmp_path), "TRAINING_PRECISION": "fp16"}, "check")
    assert result.returncode != 0
    assert "TRAINING_PRECISION must be auto, fp32 or bf16, not 'fp16'" in result.stderr


def test_development_keeps_debug_and_any_secret_key(tmp_path):
    result = _run({"CONSOLE_VAR_DIR": str(tmp_path), "SECRET_KEY": "short-secret", "DEBUG": "true"}, "check")
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_in_production(tmp_path):
    result = _run(
        {
            "CONSOLE_ENV": "production",
            "ALLOWED_HOSTS": "console.example.com",
            "CONSOLE_VAR_DIR": str(tmp_path),
            "SECRET_KEY": GOOD_KEY,
        },
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_bad_boolean_setting_is_refused(tmp_path):
    result = _run({"DEBUG": "maybe", "CONSOLE_VAR_DIR": str(tmp_path)}, "check")
    assert result.returncode != 0 and "DEBUG must be true or false" in result.stderr


@pytest.mark.django_db
def test_admin_lists_every_model(admin_client):
    from django.contrib import admin

    urls = [f"/admin/{m._meta.app_label}/{m._meta.model_name}/" for m in admin.site._registry]
    assert "/admin/modelcards/basemodel/" in urls and "/admin/modelcards/finetunedmodel/" in urls
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
    html = admin_client.get("/admin/modelcards/basemodel/?q=smollm2").content.decode()
    assert "smollm2-135m-instruct" in html


@pytest.mark.django_db
def test_admin_is_for_staff_only(alice_client):
    assert alice_client.get("/admin/").status_code == 302
