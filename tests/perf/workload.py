"""The training benchmarks' work, made the same way by every script that times it (``bench_training.py``,
``bench_training_memory.py``, ``scripts/gpu_check.py``): short chat examples generated deterministically. Only
the standard library here, so a machine without the console's packages can import it."""

from __future__ import annotations

import random

SUBJECTS = [
    "the kettle",
    "my router",
    "the garden",
    "a bicycle",
    "this recipe",
    "the printer",
    "our team",
    "the invoice",
    "a telescope",
    "the playlist",
    "my laptop",
    "the museum",
    "a sailboat",
    "the river",
]
VERBS = ["clean", "fix", "improve", "describe", "plan", "explain", "compare", "choose", "store", "measure"]
WORDS = (
    "first check the power and then look at the small label on the back because most problems come from "
    "loose cables old settings or dust so wipe it gently wait a minute and try again if it still fails "
    "write down the model number and ask the shop for a replacement part that fits"
).split()


def peer_like_examples(tokenizer, n: int = 196, seed: int = 0, lo: int = 40, hi: int = 82) -> list[dict]:
    """``n`` chat examples whose rendered length (default system prompt included) is in [lo, hi]."""
    rng = random.Random(seed)
    examples: list[dict] = []
    while len(examples) < n:
        question = f"How do I {rng.choice(VERBS)} {rng.choice(SUBJECTS)}?"
        start = rng.randrange(len(WORDS))
        length = rng.randint(4, 50)
        answer = " ".join(WORDS[(start + i) % len(WORDS)] for i in range(length)).capitalize() + "."
        example = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        tokens = len(tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=False))
        if lo <= tokens <= hi:
            examples.append(example)
    return examples


def trainer_rows(renderer, examples: list[dict]) -> list[dict]:
    """The examples as a plain ``Trainer`` takes them: rendered by the engine's renderer (the same template and
    assistant-only labels as ours), unpadded."""
    rows = []
    for example in examples:
        encoded = renderer.encode_sft(example)
        labels = [t if m else -100 for t, m in zip(encoded.input_ids, encoded.loss_mask, strict=True)]
        rows.append({"input_ids": encoded.input_ids, "attention_mask": [1] * len(labels), "labels": labels})
    return rows
