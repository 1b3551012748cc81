"""Token counts with the base model's real tokenizer and chat template, in batches.

Each example is rendered with the chat template (so the template's own tokens,
``<|im_start|>`` and the like, are counted), and the rendered texts are counted
many at a time (see ``datasets.tokenizer.CountingTokenizer``), which is several
times quicker than tokenizing one text per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .rendering import needs_final_stop, prepared_conversations
from .tokenizer import CountingTokenizer

# Used only when a tokenizer ships no chat template of its own.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}"
)


def as_counting_tokenizer(tokenizer: Any) -> CountingTokenizer:
    if isinstance(tokenizer, CountingTokenizer):
        result = tokenizer
    else:  # a transformers tokenizer
        result = CountingTokenizer.from_transformers(tokenizer)
    if result.chat_template is None:
        result = CountingTokenizer(result.backend, FALLBACK_TEMPLATE, result.special_tokens_map, result.stops)
    return result


class TokenCounter:
    """Collects examples, counts them in batches, reports ``on_counted(line, counts, extra)``.

    ``counts`` holds one token count per conversation of the example (two for DPO).
    """

    def __init__(self, tokenizer: Any, *, on_counted: Callable[[int, list[int], int], None], batch_size: int = 512):
        self.tokenizer = as_counting_tokenizer(tokenizer)
        self.chat_template = self.tokenizer.chat_template
        self.on_counted = on_counted
        self.batch_size = batch_size
        self._texts: list[str] = []
        self._stops_added: list[int] = []  # an end-of-turn token the engine appends, per text (0 or 1)
        self._owners: list[tuple[int, int, int]] = []  # (line, number of texts, extra)

    def add(self, line: int, example: dict, extra: int = 0) -> None:
        # The same preparation the training engine applies (datasets.rendering): billed = trained.
        conversations = prepared_conversations(example, chat_template=self.chat_template)
        render = self.tokenizer.render
        stops = self.tokenizer.stops
        for messages, tools in conversations:
            text = render(messages, tools)
            self._texts.append(text)
            self._stops_added.append(int(needs_final_stop(text, stops)))
        self._owners.append((line, len(conversations), extra))
        if len(self._texts) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._texts:
            return
        counts = [n + added for n, added in zip(self.tokenizer.count(self._texts), self._stops_added, strict=True)]
        position = 0
        for line, n, extra in self._owners:
            self.on_counted(line, counts[position : position + n], extra)
            position += n
        self._texts.clear()
        self._stops_added.clear()
        self._owners.clear()
