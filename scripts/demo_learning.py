"""Show that fine-tuning teaches SmolLM2-135M-Instruct something it could not know.

Trains a LoRA adapter through the engine (``jobs.training.train``) on
samples/demo/train.jsonl, then reports the validation loss before and after and
the greedy answers of the base and the fine-tuned model to held-out prompts, with
a keyword-hit score (facts) and a style score (the fixed answer frame).

    .venv/bin/python scripts/demo_learning.py [--epochs 2] [--out var/demo-run] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEMO = REPO / "samples" / "demo"
MODEL_DIR = Path(os.environ.get("CONSOLE_MODELS_DIR") or REPO / "var" / "models") / "smollm2-135m-instruct"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Printer:
    """Prints the engine's events and a metrics line at most every few seconds."""

    def __init__(self):
        from jobs.training import Callbacks

        class _CB(Callbacks):
            last = 0.0

            def event(self, level, message, data=None):
                print(f"  [{level}] {message}", flush=True)

            def metrics(self, data):
                if data["eval_loss"] is not None or time.monotonic() - self.last > 10:
                    self.last = time.monotonic()
                    print(
                        f"  step {data['current_steps']}/{data['total_steps']} epoch {data['epoch']:.2f} "
                        f"loss {data['loss']:.3f} eval {data['eval_loss']} {data['tokens_per_second']:.0f} tok/s "
                        f"eta {data['remaining_time']:.0f}s",
                        flush=True,
                    )

        self.callbacks = _CB()


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    answers = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return answers


def score(answers: list[str], heldout: list[dict]) -> tuple[int, int]:
    facts = sum(any(k.lower() in a.lower() for k in h["keywords"]) for a, h in zip(answers, heldout, strict=True))
    style = sum(all(s in a for s in h["style"]) for a, h in zip(answers, heldout, strict=True))
    return facts, style


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "demo-run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="the engine's default: bf16 on a CPU with AMX or AVX512-BF16, fp32 on others",
    )
    args = parser.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.training import TrainingConfig, evaluate_loss, physical_cores, train

    torch.set_num_threads(physical_cores())
    train_set = read_jsonl(DEMO / "train.jsonl")
    validation = read_jsonl(DEMO / "validation.jsonl")
    heldout = read_jsonl(DEMO / "heldout.jsonl")
    config = TrainingConfig(
        n_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, precision=args.precision
    )
    print(f"{len(train_set)} training examples, {len(validation)} validation, {len(heldout)} held-out prompts")

    started = time.perf_counter()
    before = evaluate_loss(model_dir=MODEL_DIR, examples=validation, config=config)
    print(f"validation loss of the base model: {before:.4f}")
    result = train(
        model_dir=MODEL_DIR,
        train_examples=train_set,
        eval_examples=validation,
        config=config,
        output_dir=args.out,
        callbacks=Printer().callbacks,
    )
    train_time = time.perf_counter() - started
    after = result.final_eval_loss
    print(
        f"validation loss: {before:.4f} -> {after:.4f} ({result.trained_tokens} tokens trained, "
        f"{result.tokens_per_second:.0f} tokens/s, {train_time:.0f} s)"
    )

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    prompts = [h["prompt"] for h in heldout]
    base = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), dtype=torch.float32).eval()
    base_answers = generate(base, tokenizer, prompts, args.max_new_tokens)
    tuned = PeftModel.from_pretrained(base, str(result.output_dir)).merge_and_unload().eval()
    tuned_answers = generate(tuned, tokenizer, prompts, args.max_new_tokens)
    base_facts, base_style = score(base_answers, heldout)
    tuned_facts, tuned_style = score(tuned_answers, heldout)
    for prompt, a, b in zip(prompts, base_answers, tuned_answers, strict=True):
        print(f"\nQ: {prompt}\n  base : {a[:200]!r}\n  tuned: {b[:200]!r}")
    n = len(heldout)
    print(f"\nkeyword hits: base {base_facts}/{n}, fine-tuned {tuned_facts}/{n}")
    print(
        f"answer style ('Aurora Kettle X7: ... -- Lumenbrook Support'): base {base_style}/{n}, "
        f"fine-tuned {tuned_style}/{n}"
    )
    print(f"total time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "eval_loss_before": before,
                    "eval_loss_after": after,
                    "keyword_hits": [base_facts, tuned_facts],
                    "style_hits": [base_style, tuned_style],
                    "prompts": n,
                    "tokens_per_second": result.tokens_per_second,
                    "answers": [
                        {"prompt": p, "base": a, "tuned": b}
                        for p, a, b in zip(prompts, base_answers, tuned_answers, strict=True)
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
