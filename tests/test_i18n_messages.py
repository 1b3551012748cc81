"""Both languages all through: validation messages in the reader's language, no English left on Chinese
pages, Chinese numbers with separators, and one glossary in the catalog (issue 17, item 9)."""

from __future__ import annotations

import html as html_lib
import io
import json
import re
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.test import Client
from django.utils import translation

from datasets.messages import Message, render
from datasets.models import ValidationIssue
from datasets.validation import Validator

from . import datasets_support

pytestmark = pytest.mark.django_db

PO = Path(settings.BASE_DIR) / "console" / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def speak(user, language: str) -> None:
    user.language = language
    user.save(update_fields=["language"])


def uploaded(client, name: str):
    return datasets_support.uploaded(client, name, category="chat")


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return html_lib.unescape(response.content.decode())


def test_validation_messages_follow_the_readers_language(alice_client, alice, alice_key):
    speak(alice, "zh-hans")
    dataset = uploaded(alice_client, "broken_chat.jsonl")  # validated in Chinese, the uploader's language
    url = f"/console/datasets/{dataset.public_id}/"
    speak(alice, "en")
    text = page(alice_client, url)
    assert 'Unknown role "bot": use system, user, assistant or tool.' in text
    assert "This line repeats line 1 exactly." in text and "column" in text
    assert "未知角色" not in text and "完全相同" not in text
    speak(alice, "zh-hans")
    text = page(alice_client, url)
    assert '未知角色 "bot"' in text and "该行与第 1 行完全相同。" in text
    assert "Unknown role" not in text and "repeats line" not in text
    # The API speaks the platform's language (English) unless the client asks for another.
    problems = (
        Client()
        .get(f"/api/paas/v4/files/{dataset.public_id}", HTTP_AUTHORIZATION=f"Bearer {alice_key}")
        .json()["problems"]
    )
    assert any(p["message"].startswith('Unknown role "bot"') for p in problems)
    assert not any(re.search(r"[\u4e00-\u9fff]", p["message"]) for p in problems)


def test_messages_uploaded_in_english_read_in_chinese(alice_client, alice, alice_key):
    dataset = uploaded(alice_client, "broken_chat.jsonl")
    assert 'Unknown role "bot"' in page(alice_client, f"/console/datasets/{dataset.public_id}/")
    speak(alice, "zh-hans")
    text = page(alice_client, f"/console/datasets/{dataset.public_id}/")
    assert '未知角色 "bot"' in text and "Unknown role" not in text
    # The list's first error (the API's status_details) follows the client's language too.
    auth = {"HTTP_AUTHORIZATION": f"Bearer {alice_key}"}
    english = Client().get("/api/paas/v4/files", **auth).json()["data"][0]["status_details"]
    chinese = Client().get("/api/paas/v4/files", HTTP_ACCEPT_LANGUAGE="zh-hans", **auth).json()
    assert "truncated" in english and "截断" in chinese["data"][0]["status_details"]


def test_a_row_from_before_shows_its_stored_text(alice_client, alice):
    dataset = uploaded(alice_client, "broken_chat.jsonl")
    issue = dataset.issues.first()
    ValidationIssue.objects.filter(pk=issue.pk).update(message="旧的消息", message_args=None)
    issue.refresh_from_db()
    assert issue.text == "旧的消息"
    assert "旧的消息" in page(alice_client, f"/console/datasets/{dataset.public_id}/")
    assert render({"text": "Gone %(x)s", "params": {}}, "kept") == "kept"  # parameters that changed since


def test_a_message_is_stored_as_its_template_and_parameters():
    message = Message("The %(role)s message has no content.") % {"role": "user"}
    stored = json.loads(json.dumps(message.as_json()))
    assert stored == {"text": "The %(role)s message has no content.", "params": {"role": "user"}}
    with translation.override("zh-hans"):
        assert render(stored) == str(message) and "user" in render(stored) and "message" not in render(stored)
    assert message.english() == "The user message has no content."


@pytest.mark.parametrize(
    "line",
    [
        b'{"messages": [1,]}',
        b"{'messages': []}",
        b'{"messages" []}',
        b'{"messages": [1 2]}',
        b'{"messages": "a\tb"}',
        b'{"messages": "\\q"}',
        b"nope",
        b'{"messages": [], "a": "cut',
    ],
)
def test_json_errors_are_ours_with_the_column(line):
    result = Validator(category="chat").run(io.BytesIO(line + b"\n"))
    (issue,) = result.errors
    english = issue.message.english()
    assert "column" in english and issue.line == 1
    for python_words in ("Expecting", "Unterminated", "Invalid control", "Invalid \\escape", "delimiter", "char "):
        assert python_words not in english
    with translation.override("zh-hans"):
        chinese = str(issue.message)
    assert "列" in chinese and not re.search(r"Expecting|Unterminated|Invalid", chinese)


def test_chinese_pages_leave_nothing_in_english(alice_client, alice):
    dataset = uploaded(alice_client, "chat.jsonl")
    speak(alice, "zh-hans")
    detail = page(alice_client, f"/console/datasets/{dataset.public_id}/")
    assert "系统" in detail and "用户" in detail and "助手" in detail
    for role in ("System", "User", "Assistant"):
        assert f">{role}<" not in detail.replace(" ", "")
    assert "微调控制台" in detail and "Fine-tuning Console" not in detail

    playground = page(alice_client, "/console/playground/")
    assert "(base)" not in playground and "(fine-tune)" not in playground and "(基础模型)" in playground

    create = page(alice_client, "/console/jobs/create/")
    assert " ex. " not in create and "13 条样本" in create

    square = page(alice_client, "/console/models/")
    assert "A small instruction-tuned model" not in square and "available to all users" not in square
    assert "小型指令微调模型" in square

    card = page(alice_client, "/console/models/smollm2-135m-instruct/")
    assert "134,515,008" in card and "134515008" not in card


def test_a_named_product_keeps_its_name(alice_client, alice, settings):
    settings.CONSOLE_PRODUCT_NAME = "Acme Tune"
    speak(alice, "zh-hans")
    assert "Acme Tune" in page(alice_client, "/console/")


def test_the_catalog_follows_the_glossary():
    import importlib.util

    spec = importlib.util.spec_from_file_location("zh_hans", Path(settings.BASE_DIR) / "scripts" / "zh_hans.py")
    zh_hans = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zh_hans)
    assert {"基座模型", "您"} <= set(zh_hans.GLOSSARY)
    po = polib.pofile(str(PO))
    assert zh_hans.glossary_violations(po) == []
    for entry in po:
        if not entry.obsolete:
            for text in [entry.msgstr, *entry.msgstr_plural.values()]:
                assert "基座" not in text and "您" not in text, entry.msgid
    # The Chinese emails and SMS are written in notifications/events.py and in each app's notification_events.py.
    root = Path(settings.BASE_DIR)
    texts = [root / "notifications" / "events.py", *sorted(root.glob("*/notification_events.py"))]
    assert {path.parent.name for path in texts} >= {"notifications", "datasets", "deployments", "experience", "jobs"}
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert "您" not in text and "基座" not in text, path


def test_a_count_in_a_sentence_is_a_plural_not_an_s_in_brackets():
    """A count with "(s)" ("1 deployment(s)") reads wrong: a counted noun is an ngettext (blocktranslate count) in both
    languages (issue 17, item 14). Python's and the templates' strings are all in the catalog."""
    po = polib.pofile(str(PO))
    bracketed = [e.msgid for e in po if not e.obsolete and re.search(r"(?<!http)(?<!%)\(s\)", e.msgid)]
    assert bracketed == []
