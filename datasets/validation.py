"""Streaming validation of a JSONL file in constant memory.

The file is read one line at a time (a line longer than ``max_line_bytes`` is
skipped, not loaded). Each problem has a 1-based line number, a JSON path and a
message (a ``datasets.messages.Message``, rendered in the reader's language when
shown); every problem goes to the report file as it is found, and the
first ``keep`` errors and warnings are also kept in memory for the database.
Duplicate lines are found from an 8-byte hash per example (16 bytes a line in
all, sorted at the end), so memory grows by that much per line and no more.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .messages import Message, _, ngettext
from .models import Category, Severity
from .schema import DETECTION_RANK, IMAGE_TOKENS, check_example, detect_category, json_error_reason
from .tokens import TokenCounter

BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
DETECT_LINES = 100
DETECT_BYTES = 16 * 1024 * 1024
PROGRESS_EVERY = 0.5  # seconds


def _csv_safe(text: str) -> str:
    """Keep spreadsheet programs from running a cell that starts like a formula (text from the file)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class ValidationCancelled(Exception):
    """The dataset went away while it was being validated."""


@dataclass(slots=True)
class Issue:
    severity: str
    line: int | None
    path: str
    code: str
    message: Message


@dataclass
class ValidationResult:
    category: str
    detected: bool = False
    lines: int = 0
    examples: int = 0
    legacy_examples: int = 0
    text_tokens: int | None = None
    tokens: int | None = None
    images: int = 0
    longest_example_tokens: int | None = None
    truncated_examples: int = 0
    duplicate_lines: int = 0
    error_count: int = 0
    warning_count: int = 0
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def valid(self) -> bool:
        return self.error_count == 0 and self.examples > 0


def detect_file_category(fh: IO[bytes]) -> str | None:
    """The category the first lines of a file look like (the most specific one seen)."""
    best = None
    seen = 0
    read = 0
    fh.seek(0)
    while seen < DETECT_LINES and read < DETECT_BYTES:
        raw = fh.readline(DETECT_BYTES)
        if not raw:
            break
        read += len(raw)
        if raw.startswith(BOM):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        found = detect_category(obj)
        if found is None:
            continue
        seen += 1
        if best is None or DETECTION_RANK[found] > DETECTION_RANK[best]:
            best = found
    fh.seek(0)
    return best


class Validator:
    """Validate one file; see ``validate_stream``."""

    def __init__(
        self,
        *,
        category: str | None,
        tokenizer: Any = None,
        context_length: int | None = None,
        advised_min_examples: int = 0,
        max_line_bytes: int = 64 * 1024 * 1024,
        keep: int = 1000,
        report: IO[str] | None = None,
        progress: Callable[[int], bool | None] | None = None,
        batch_size: int = 512,
    ):
        self.requested_category = category
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.advised_min = advised_min_examples
        self.max_line_bytes = max_line_bytes
        self.keep = keep
        self.report = csv.writer(report) if report is not None else None
        if self.report is not None:
            self.report.writerow(["line", "severity", "path", "code", "message"])
        self.progress = progress
        self.batch_size = batch_size
        self.result = ValidationResult(category=category or Category.CHAT)
        self._hashes = array("Q")
        self._hash_lines = array("L")
        self._per_image = 0
        self._check_context = False

    # -- problems --------------------------------------------------------------

    def issue(self, severity: str, line: int | None, path: str, code: str, message: Message) -> None:
        result = self.result
        if severity == Severity.ERROR:
            result.error_count += 1
            bucket = result.errors
        else:
            result.warning_count += 1
            bucket = result.warnings
        if len(bucket) < self.keep:
            bucket.append(Issue(severity, line, path, code, message))
        if self.report is not None:
            # The report file is written once, in the uploader's language (the worker's active one).
            self.report.writerow(
                ["" if line is None else line, severity, _csv_safe(path), code, _csv_safe(str(message))]
            )

    def error(self, line: int | None, path: str, code: str, message: Message) -> None:
        self.issue(Severity.ERROR, line, path, code, message)

    def warning(self, line: int | None, path: str, code: str, message: Message) -> None:
        self.issue(Severity.WARNING, line, path, code, message)

    # -- tokens ----------------------------------------------------------------

    def _on_counted(self, line: int, counts: list[int], images: int) -> None:
        result = self.result
        text = sum(counts)
        result.text_tokens = (result.text_tokens or 0) + text
        if result.category == Category.IMAGE_GENERATION:
            billable = images * self._per_image
            longest = max(counts)
        elif self.context_length and images == 0:
            # Training truncates each sequence to the context: billed is what is trained.
            billable = sum(min(count, self.context_length) for count in counts)
            longest = max(counts)
        else:
            billable = text + images * self._per_image
            longest = max(counts) + images * self._per_image
        result.tokens = (result.tokens or 0) + billable
        if result.longest_example_tokens is None or longest > result.longest_example_tokens:
            result.longest_example_tokens = longest
        if self._check_context and longest > self.context_length:
            result.truncated_examples += 1
            self.warning(
                line,
                "",
                "too_long",
                _(
                    "This example has %(tokens)s tokens; the base model's context is %(context)s, "
                    "so it will be truncated in training."
                )
                % {"tokens": f"{longest:,}", "context": f"{self.context_length:,}"},
            )

    # -- the file --------------------------------------------------------------

    def run(self, fh: IO[bytes], total_bytes: int | None = None) -> ValidationResult:
        result = self.result
        if self.requested_category is None:
            detected = detect_file_category(fh)
            result.category = detected or Category.CHAT
            result.detected = detected is not None
        category = result.category
        self._per_image = IMAGE_TOKENS.get(category, 0)
        self._check_context = bool(self.context_length) and category != Category.IMAGE_GENERATION
        counter = None
        if self.tokenizer is not None:
            counter = TokenCounter(self.tokenizer, on_counted=self._on_counted, batch_size=self.batch_size)
            result.tokens = result.text_tokens = 0
        limit = self.max_line_bytes + 1
        consumed = 0
        line_no = 0
        first_content_seen = False
        last_progress = time.monotonic()
        readline = fh.readline
        examples = 0
        images_total = 0
        legacy = 0
        blake2b = hashlib.blake2b
        hashes_append = self._hashes.append
        lines_append = self._hash_lines.append
        while True:
            raw = readline(limit)
            if not raw:
                break
            line_no += 1
            consumed += len(raw)
            if self.progress is not None:
                now = time.monotonic()
                if now - last_progress >= PROGRESS_EVERY:
                    last_progress = now
                    if self.progress(consumed) is False:
                        raise ValidationCancelled
            if len(raw) == limit and not raw.endswith(b"\n"):
                while True:  # skip the rest of an over-long line without keeping it
                    more = readline(limit)
                    consumed += len(more)
                    if not more or more.endswith(b"\n"):
                        break
                self.error(
                    line_no,
                    "",
                    "line_too_long",
                    _("The line is longer than %(limit)s MiB; each line must hold one example.")
                    % {"limit": self.max_line_bytes // (1024 * 1024)},
                )
                first_content_seen = True
                continue
            if line_no == 1:
                if raw.startswith(BOM):
                    raw = raw[3:]
                elif raw.startswith(UTF16_BOMS):
                    self.error(
                        1, "", "encoding", _("The file is UTF-16 text; save it as UTF-8 (one JSON object per line).")
                    )
                    break
            stripped = raw.strip()
            if not stripped:
                continue
            if not first_content_seen:
                first_content_seen = True
                if b"\x00" in stripped:
                    self.error(
                        line_no,
                        "",
                        "binary",
                        _(
                            "This is a binary file, not JSONL text. "
                            "Upload a UTF-8 text file with one JSON object per line."
                        ),
                    )
                    break
            try:
                text = stripped.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.error(line_no, "", "encoding", self._decode_message(stripped, exc))
                continue
            try:
                obj = json.loads(text)
            except ValueError as exc:
                if self._whole_file_problem(line_no, text, exc):
                    break
                self.error(line_no, "", "json", self._json_message(text, exc))
                continue
            if isinstance(obj, list) and examples == 0 and result.error_count == 0 and text.startswith("["):
                self.error(
                    line_no,
                    "",
                    "json_array",
                    _(
                        "The file is a JSON array (it starts with '['). Upload JSONL instead: one JSON object per "
                        "line, without the surrounding [ ] and without commas between lines."
                    ),
                )
                break
            problems: list[tuple[str, str, str]] = []
            example, images = check_example(obj, category, problems)
            for path, code, message in problems:
                self.error(line_no, path, code, message)
            if example is None:
                continue
            examples += 1
            images_total += images
            if "messages" not in obj and "preferred_output" not in obj:  # input/target, converted to chat
                legacy += 1
            hashes_append(int.from_bytes(blake2b(stripped, digest_size=8).digest(), "little"))
            lines_append(line_no)
            if counter is not None:
                counter.add(line_no, example, images)
        if counter is not None:
            counter.flush()
        result.lines = line_no
        result.examples = examples
        result.images = images_total
        result.legacy_examples = legacy
        result.bytes_read = consumed
        self._report_duplicates()
        if examples == 0 and result.error_count == 0:
            self.error(None, "", "no_examples", _("The file holds no examples: it has only blank lines."))
        elif 0 < examples < self.advised_min:
            self.warning(
                None,
                "",
                "few_examples",
                ngettext(
                    "The file has %(n)s example; the platform advises at least several hundred "
                    "(%(min)s or more) for good results.",
                    "The file has %(n)s examples; the platform advises at least several hundred "
                    "(%(min)s or more) for good results.",
                    examples,
                )
                % {"n": examples, "min": self.advised_min},
            )
        if self.progress is not None:
            self.progress(consumed)
        return result

    def _report_duplicates(self) -> None:
        if len(self._hashes) < 2:
            return
        import numpy as np

        hashes = np.frombuffer(self._hashes, dtype=np.uint64)
        lines = np.frombuffer(self._hash_lines, dtype=np.dtype(f"u{self._hash_lines.itemsize}"))
        order = np.argsort(hashes, kind="stable")
        sorted_hashes = hashes[order]
        same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1]) + 1
        if not len(same):
            return
        duplicates = []
        for index in same:
            # the first line of a run of equal hashes is the original
            start = index
            while start > 0 and sorted_hashes[start - 1] == sorted_hashes[index]:
                start -= 1
            duplicates.append((int(lines[order[index]]), int(lines[order[start]])))
        duplicates.sort()
        self.result.duplicate_lines = len(duplicates)
        for line, original in duplicates:
            self.warning(line, "", "duplicate", _("This line repeats line %(line)s exactly.") % {"line": original})

    @staticmethod
    def _decode_message(raw: bytes, exc: UnicodeDecodeError) -> Message:
        hint: Message | str = ""
        try:
            raw.decode("gb18030")
            hint = _(" It looks like GBK/GB18030 (Chinese) text.")
        except UnicodeDecodeError:
            pass
        return _("The line is not valid UTF-8 (byte 0x%(byte)02x at byte %(pos)s).%(hint)s Save the file as UTF-8.") % {
            "byte": raw[exc.start],
            "pos": exc.start + 1,
            "hint": hint,
        }

    @staticmethod
    def _json_message(text: str, exc: ValueError) -> Message:
        """Our own words for a line that is not JSON, with the column (never Python's text)."""
        msg = getattr(exc, "msg", str(exc))
        pos = getattr(exc, "pos", None)
        col = getattr(exc, "colno", None) or 1
        stripped = text.rstrip()
        if text.startswith("{") and (not stripped.endswith("}") or (pos is not None and pos >= len(stripped) - 1)):
            return _("The JSON ends before the object is complete (a truncated line?) at column %(col)s.") % {
                "col": col
            }
        if msg.startswith("Extra data"):
            return _(
                "There is more than one JSON value on this line (extra data at column %(col)s); "
                "put each example on its own line."
            ) % {"col": col}
        return _("This line is not valid JSON at column %(col)s: %(reason)s.") % {
            "col": col,
            "reason": json_error_reason(exc),
        }

    def _whole_file_problem(self, line_no: int, text: str, exc: ValueError) -> bool:
        """A JSON array or pretty-printed JSON: one clear error instead of one per line."""
        if self.result.error_count or self.result.examples or self._hashes:
            return False
        head = text.strip()
        if head.startswith("["):
            self.error(
                line_no,
                "",
                "json_array",
                _(
                    "The file is a JSON array (it starts with '['). Upload JSONL instead: one JSON object per "
                    "line, without the surrounding [ ] and without commas between lines."
                ),
            )
            return True
        if head == "{":
            self.error(
                line_no,
                "",
                "pretty_printed",
                _(
                    "The JSON spreads over several lines (pretty-printed). JSONL needs each example on one line: "
                    "write it with json.dumps(example) per line, without indent."
                ),
            )
            return True
        return False


def validate_stream(fh: IO[bytes], **options: Any) -> ValidationResult:
    """Validate the JSONL file open in ``fh`` (binary); options as for ``Validator``."""
    return Validator(**options).run(fh)
