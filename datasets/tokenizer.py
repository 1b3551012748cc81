"""A light tokenizer for counting: the model's own tokenizer.json and chat template, without torch.

Loading a transformers tokenizer imports torch (about 430 MB of memory before
any work); the ``tokenizers`` library that does the actual work, plus jinja2
for the chat template, takes about 70 MB. ``CountingTokenizer`` renders with a
jinja environment set up as transformers sets it up (sandboxed, ``trim_blocks``,
``lstrip_blocks``, ``tojson``, ``raise_exception``, ``strftime_now``,
``namespace``), and counts with the Rust tokenizer. The tests check both
against ``AutoTokenizer.apply_chat_template(..., tokenize=True)``.

Exact counting, faster: for a byte-level BPE tokenizer of the GPT-2 kind (no
normalizer; pre-tokenizer ``ByteLevel`` with the GPT-2 regex and no prefix
space; added tokens without strip flags), a text splits first at its special
tokens, and the GPT-2 regex never puts a non-space character and a following
space into one pre-token. So the count of a text is the number of special
tokens plus the sum of the counts of its pieces cut before every space that
follows a non-space ("units" such as `` model.``). Natural text repeats its
units constantly, so each unit's count is cached (bounded) and only new units
are tokenized, many at a time. Any other tokenizer is counted text by text in
batches. The first texts of every run are counted both ways and the cache is
switched off if they ever disagree.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Unicode White_Space, which is what the tokenizer's regex engine means by \s.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
UNITS = re.compile(f"[{WHITE_SPACE}]*[^{WHITE_SPACE}]+|[{WHITE_SPACE}]+")
CACHE_LIMIT = 100_000  # units; cleared when full, so memory stays bounded (about 15 MB)
CACHE_UNIT_CHARS = 32  # longer units (unspaced CJK sentences, hashes) are rarely repeated: not cached
VERIFY_TEXTS = 64


def _compile_template(source: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}`` blocks (assistant masks in training) render their body as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = jinja2.utils.Namespace
    return env.from_string(source)


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("content")
    return None


class CountingTokenizer:
    """Render with the chat template and count tokens; see the module docstring."""

    def __init__(
        self,
        backend: Any,
        chat_template: str | None,
        special_tokens_map: dict[str, str],
        stops: frozenset[str] = frozenset(),
    ):
        self.backend = backend
        self.stops = stops  # end-of-turn tokens (datasets.rendering.stop_token_strings)
        self.chat_template = chat_template
        self.special_tokens_map = dict(special_tokens_map)
        self._template = _compile_template(chat_template) if chat_template else None
        self._encode_batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        self._special = self._special_splitter()
        self.unit_cache: dict[str, int] | None = {} if self._special is not None else None
        self._verify_left = VERIFY_TEXTS

    # -- construction --------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | Path) -> CountingTokenizer:
        from tokenizers import Tokenizer

        folder = Path(folder)
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config: dict = {}
        if (folder / "tokenizer_config.json").exists():
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        template = None
        if (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        elif isinstance(config.get("chat_template"), str):
            template = config["chat_template"]
        elif isinstance(config.get("chat_template"), list):  # named templates: use "default"
            named = {t.get("name"): t.get("template") for t in config["chat_template"] if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        special: dict[str, str] = {}
        if (folder / "special_tokens_map.json").exists():
            for key, value in json.loads((folder / "special_tokens_map.json").read_text(encoding="utf-8")).items():
                if (content := _token_content(value)) is not None:
                    special[key] = content
        for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            if (content := _token_content(config.get(key))) is not None:
                special[key] = content
        from .rendering import stop_token_strings

        stops = stop_token_strings(folder, special.get("eos_token"), backend.id_to_token)
        return cls(backend, template, special, stops)

    @classmethod
    def from_transformers(cls, tokenizer: Any) -> CountingTokenizer:
        template = tokenizer.chat_template
        if isinstance(template, dict):
            template = template.get("default") or next(iter(template.values()))
        special = {k: v for k, v in (tokenizer.special_tokens_map or {}).items() if isinstance(v, str)}
        from .rendering import stop_token_strings

        stops = stop_token_strings(
            getattr(tokenizer, "name_or_path", None), tokenizer.eos_token, tokenizer.convert_ids_to_tokens
        )
        return cls(tokenizer.backend_tokenizer, template, special, stops)

    def _special_splitter(self) -> re.Pattern | None:
        """The added-token splitter when the unit cache is exact for this tokenizer, else None."""
        backend = self.backend
        try:
            pre = backend.pre_tokenizer
            model = backend.model
            if backend.normalizer is not None or type(model).__name__ != "BPE" or getattr(model, "dropout", None):
                return None
            if type(pre).__name__ != "ByteLevel" or not getattr(pre, "use_regex", True) or pre.add_prefix_space:
                return None
            added = list(backend.get_added_tokens_decoder().values())
        except Exception:  # an unusual tokenizer: count plainly
            return None
        if any(t.lstrip or t.rstrip or t.single_word for t in added):
            return None
        contents = sorted({t.content for t in added if t.content}, key=len, reverse=True)
        if not contents:
            return re.compile(r"(?!x)x")  # matches nothing
        return re.compile("(" + "|".join(re.escape(c) for c in contents) + ")")

    # -- rendering -------------------------------------------------------------

    def render(self, messages: list[dict], tools: list | None = None, *, add_generation_prompt: bool = False) -> str:
        if self._template is None:
            raise ValueError("this tokenizer has no chat template")
        return self._template.render(
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )

    # -- counting --------------------------------------------------------------

    def count_plain(self, texts: list[str]) -> list[int]:
        return [len(enc.ids) for enc in self._encode_batch(texts, add_special_tokens=False)]

    def count(self, texts: list[str]) -> list[int]:
        """Token counts of ``texts`` (no special tokens added: the template already wrote them)."""
        if self.unit_cache is None:
            return self.count_plain(texts)
        counts = self._count_cached(texts)
        if self._verify_left > 0:
            sample = texts[: self._verify_left]
            self._verify_left -= len(sample)
            if self.count_plain(sample) != counts[: len(sample)]:
                logger.warning("unit-cached token counts differ from plain counts; counting plainly from now on")
                self.unit_cache = None
                return self.count_plain(texts)
        return counts

    def _count_cached(self, texts: list[str]) -> list[int]:
        cache, special = self.unit_cache, self._special
        assert cache is not None and special is not None  # a unit cache is kept only with a special-token splitter
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        split_special = special.split
        split_units = UNITS.findall
        counts = [0] * len(texts)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            parts = split_special(text)
            total = (len(parts) - 1) // 2
            for piece in parts[0::2]:
                if not piece:
                    continue
                for unit in split_units(piece):
                    known = cache.get(unit)
                    if known is None:
                        missing.setdefault(unit, []).append(i)
                    else:
                        total += known
            counts[i] = total
        if missing:
            units = list(missing)
            for unit, n in zip(units, self.count_plain(units), strict=True):
                for i in missing[unit]:
                    counts[i] += n
                if len(unit) <= CACHE_UNIT_CHARS:
                    cache[unit] = n
        return counts


@lru_cache(maxsize=8)
def counting_tokenizer_from_folder(folder: str) -> CountingTokenizer:
    return CountingTokenizer.from_folder(folder)


def load_counting_tokenizer(base_model) -> CountingTokenizer:
    """The base model's tokenizer for counting; from its folder without torch where possible."""
    from modelcards.weights import load_tokenizer, model_dir

    folder = model_dir(base_model)
    if (Path(folder) / "tokenizer.json").exists():
        return counting_tokenizer_from_folder(str(folder))
    return CountingTokenizer.from_transformers(load_tokenizer(base_model))
