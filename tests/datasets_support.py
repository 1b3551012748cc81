"""Helpers for the datasets tests: sample paths, a validator run on bytes."""

from __future__ import annotations

import io
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def sample(name: str) -> Path:
    return SAMPLES / name


def tokenizer():
    from modelcards.models import BaseModel
    from modelcards.weights import load_tokenizer

    return load_tokenizer(BaseModel.objects.get(is_default=True))


def run_validator(data: bytes, category: str | None = None, tok=None, **options):
    from datasets.validation import Validator

    report = io.StringIO()
    result = Validator(category=category, tokenizer=tok, context_length=options.pop("context_length", 2048),
                       advised_min_examples=options.pop("advised_min_examples", 300), report=report,
                       **options).run(io.BytesIO(data))
    return result, report.getvalue()


def errors_by_line(result) -> dict[int | None, list[tuple[str, str]]]:
    found: dict[int | None, list[tuple[str, str]]] = {}
    for issue in result.errors:
        found.setdefault(issue.line, []).append((issue.path, issue.message))
    return found
