"""Turn dataset examples into token ids and a loss mask with the base model's chat template.

How an example becomes text is ``datasets.rendering`` (the same code counts the tokens a
user is billed for). Here the text is tokenized and masked.

Loss mask: only the tokens of assistant turns (their content, reasoning, tool calls
and the template's end-of-turn token) carry labels; a turn with ``"weight": 0`` (OpenAI's chat
format) is context only. The span of assistant turn *i* is
found by rendering the conversation up to turn *i* with ``add_generation_prompt=True``
(where the assistant's text starts) and up to and including turn *i* (where it ends);
tokens are matched to spans through the fast tokenizer's character offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets.rendering import (
    RenderError,
    TemplateCaps,
    dpo_conversations,
    needs_final_stop,
    prepare_messages,
    sft_conversation,
    stop_token_strings,
)

__all__ = ["Encoded", "EncodedPair", "RenderError", "Renderer", "TemplateCaps"]

IGNORE = -100


@dataclass
class Encoded:
    """One tokenized sequence: ids, and a parallel boolean mask of the tokens that carry loss."""

    input_ids: list[int]
    loss_mask: list[bool]
    truncated: bool = False

    @property
    def n_labels(self) -> int:
        return sum(self.loss_mask)


@dataclass
class EncodedPair:
    """A DPO example: the chosen and rejected sequences share their prompt."""

    chosen: Encoded
    rejected: Encoded
    truncated: bool = False


class Renderer:
    """Encodes examples for one tokenizer; ``max_seq_len`` truncates from the end."""

    def __init__(self, tokenizer, max_seq_len: int):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("a fast tokenizer (with character offsets) is needed")
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.caps = TemplateCaps.of(tokenizer)
        folder = getattr(tokenizer, "name_or_path", None)
        self.stops = stop_token_strings(folder, tokenizer.eos_token, tokenizer.convert_ids_to_tokens)
        self.stop_ids = {tokenizer.convert_tokens_to_ids(s) for s in self.stops}

    def _render(self, messages: list[dict], tools: list[dict] | None, generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
        if tools:
            kwargs["tools"] = tools
        try:
            return self.tokenizer.apply_chat_template(messages, **kwargs)
        except Exception as exc:  # template errors (jinja raise_exception) carry the reason
            raise RenderError(f"the chat template refused the conversation: {exc}") from None

    def encode_conversation(
        self, messages: list[dict], tools: list[dict] | None = None, train_from: int = 0
    ) -> Encoded:
        """Tokenize a conversation; assistant turns at index >= ``train_from`` carry loss, but for those with
        ``"weight": 0`` (OpenAI's chat format: a turn kept as context, not learnt)."""
        original = messages if isinstance(messages, list) else []
        messages, template_tools = prepare_messages(messages, tools, self.caps)
        shift = len(messages) - len(original)  # a system message describing tools may have been added
        full = self._render(messages, template_tools, False)
        spans: list[tuple[int, int]] = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i - shift < train_from:
                continue
            if isinstance(original[i - shift], dict) and original[i - shift].get("weight") == 0:
                continue
            start_text = self._render(messages[:i], template_tools, True) if i else ""
            end_text = self._render(messages[: i + 1], template_tools, False)
            if not full.startswith(start_text) or not full.startswith(end_text) or len(end_text) <= len(start_text):
                # The template rewrites earlier turns (e.g. drops old reasoning): only the
                # last assistant turn can be located reliably.
                if i != len(messages) - 1:
                    continue
                start_text = self._render(messages[:i], template_tools, True)
                if not full.startswith(start_text):
                    raise RenderError("the chat template does not render the conversation incrementally")
                end_text = full
            end = len(end_text.rstrip())  # the newline after end-of-turn is never generated
            spans.append((len(start_text), end))
        if not spans:
            raise RenderError("the example has no assistant turn to learn from")
        encoding = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = encoding["input_ids"]
        mask = [False] * len(ids)
        span_index = 0
        for t, (a, b) in enumerate(encoding["offset_mapping"]):
            while span_index < len(spans) and a >= spans[span_index][1]:
                span_index += 1
            if span_index == len(spans):
                break
            start, end = spans[span_index]
            if a >= start and b <= end and b > a:
                mask[t] = True
        self._learn_end_of_turn(ids, mask, full)
        truncated = len(ids) > self.max_seq_len
        if truncated:
            ids, mask = ids[: self.max_seq_len], mask[: self.max_seq_len]
        return Encoded(ids, mask, truncated)

    def _learn_end_of_turn(self, ids: list[int], mask: list[bool], full: str) -> None:
        """Each trained assistant turn ends with a stop token that carries loss, so the model learns to stop.

        Where the template ends a turn with the next role's token (GLM-4's ``<|user|>``), that token is
        trained; where the conversation ends with no stop token at all, the tokenizer's eos is appended
        (``needs_final_stop``: billing counts it too)."""
        if not self.stop_ids:
            return
        last = len(ids) - 1
        for t in range(len(ids)):
            if mask[t] and (t == last or not mask[t + 1]) and ids[t] not in self.stop_ids:
                if t < last and ids[t + 1] in self.stop_ids:
                    mask[t + 1] = True
        if needs_final_stop(full, self.stops) and self.tokenizer.eos_token_id is not None and any(mask):
            ids.append(self.tokenizer.eos_token_id)
            mask.append(True)

    def encode_sft(self, example: dict) -> Encoded:
        conversation = sft_conversation(example)
        return self.encode_conversation(conversation.messages, conversation.tools)

    def encode_dpo(self, example: dict) -> EncodedPair:
        """Chosen and rejected: prompt + preferred / non-preferred output; loss on the outputs."""
        pair = [
            self.encode_conversation(c.messages, c.tools, train_from=c.train_from) for c in dpo_conversations(example)
        ]
        chosen, rejected = pair
        return EncodedPair(chosen, rejected, chosen.truncated or rejected.truncated)
