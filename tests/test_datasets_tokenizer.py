"""The counting tokenizer renders and counts exactly as transformers does, without importing torch."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from datasets.rendering import prepared_conversations
from datasets.schema import check_example, detect_category
from datasets.tokenizer import CountingTokenizer

from .datasets_support import SAMPLES, tokenizer

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder_tokenizer():
    from modelcards.models import BaseModel
    from modelcards.weights import model_dir

    return CountingTokenizer.from_folder(model_dir(BaseModel.objects.get(is_default=True)))


def _conversations():
    hf = tokenizer()
    for path in sorted(SAMPLES.glob("*.jsonl")):
        if path.name.startswith("broken"):
            continue
        for raw in path.read_bytes().splitlines():
            obj = json.loads(raw)
            example, _ = check_example(obj, detect_category(obj), [])
            yield from prepared_conversations(example, chat_template=hf.chat_template)


def test_render_and_count_match_transformers(folder_tokenizer):
    hf = tokenizer()
    conversations = list(_conversations())
    assert len(conversations) > 40
    texts = []
    for messages, tools in conversations:
        text = folder_tokenizer.render(messages, tools)
        assert text == hf.apply_chat_template(messages, tools=tools, tokenize=False)
        texts.append(text)
    expected = [len(hf.apply_chat_template(m, tools=t, tokenize=True)["input_ids"]) for m, t in conversations]
    assert folder_tokenizer.count(texts) == expected
    assert folder_tokenizer.unit_cache is not None  # the exact fast path is in use for this tokenizer


def test_unit_cached_counts_equal_plain_counts_on_awkward_text(folder_tokenizer):
    rng = random.Random(3)
    alphabet = [
        "a",
        "b",
        "Z",
        "7",
        "42",
        ".",
        ",",
        "'s",
        "'t",
        "!",
        "?",
        "-",
        " ",
        "  ",
        "\t",
        "\n",
        "\n\n",
        "\r\n",
        "\xa0",
        "\u3000",
        "\x1c",
        "\x1f",
        "\u2003",
        "你",
        "好",
        "。",
        "😀",
        "é",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "user",
        "assistant",
        '{"k": 1}',
        "    ",
        " \n ",
    ]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    fresh = CountingTokenizer(
        folder_tokenizer.backend, folder_tokenizer.chat_template, folder_tokenizer.special_tokens_map
    )
    fresh._verify_left = 0  # compare by hand below, over every text
    assert fresh._count_cached(texts) == fresh.count_plain(texts)
    assert fresh._count_cached(texts) == fresh.count_plain(texts)  # the second time from the cache


def test_validation_path_does_not_import_torch():
    code = (
        "import os, sys, django;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings');"
        "django.setup();"
        "from modelcards.models import BaseModel;"
        "from datasets.validation import Validator;"
        "from datasets.tokenizer import CountingTokenizer;"
        "from modelcards.weights import model_dir;"
        "import pathlib;"
        "folder = pathlib.Path(os.environ['CONSOLE_MODELS_DIR']) / 'smollm2-135m-instruct';"
        "tok = CountingTokenizer.from_folder(folder);"
        f"r = Validator(category=None, tokenizer=tok).run(open({str(SAMPLES / 'chat.jsonl')!r}, 'rb'));"
        "assert r.tokens > 0, r;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"]
