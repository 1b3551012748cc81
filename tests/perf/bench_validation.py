"""Benchmark: our streaming validation + token count against a naive baseline.

Not a test (pytest does not collect bench_*.py). Run from the repository root:

    .venv/bin/python tests/perf/bench_validation.py               # 200 MB
    .venv/bin/python tests/perf/bench_validation.py --also-1gb    # and 1 GB (ours only)

It generates a chat JSONL file, then runs each contender in its own process so
that peak memory (``ru_maxrss``) is that contender's alone:

* ours: ``datasets.validation.Validator`` (streaming, schema checks, duplicate
  and context warnings, report file, chat template + ``CountingTokenizer``), as
  the validation task runs it;
* baseline: read the whole file, ``json.loads`` each line,
  ``tokenizer.apply_chat_template(messages, tokenize=True)`` one at a time.

Both count the same tokens; the script checks that the totals agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024

WORDS = (
    "the model learns from examples of questions and answers that teams write by hand for their own "
    "business data privacy training tokens context window evaluation deploy instance request latency "
    "customer order invoice refund shipping account password reset weather city forecast translate summary"
).split()
CHINESE = "模型微调训练数据质量客户订单发票退款物流账户密码天气城市预报翻译摘要问题答案"
SYSTEMS = [
    "You are a helpful and knowledgeable AI assistant.",
    "You are a customer service agent for an online shop. Answer briefly and politely.",
    "你是一位乐于助人，知识渊博的全能AI助手。",
]


def _sentence(rng: random.Random, n: int) -> str:
    if rng.random() < 0.15:
        return "".join(rng.choice(CHINESE) for _ in range(n * 2)) + "。"
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generate(path: Path, size_mb: int, seed: int = 7) -> None:
    """A chat JSONL file of about ``size_mb`` MiB with varied, realistic-looking examples."""
    rng = random.Random(seed)
    target = size_mb * MIB
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < target:
            messages = []
            if rng.random() < 0.7:
                messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
            for _turn in range(rng.choice((1, 1, 1, 2, 3))):
                messages.append(
                    {
                        "role": "user",
                        "content": " ".join(_sentence(rng, rng.randint(6, 20)) for _ in range(rng.randint(1, 3))),
                    }
                )
                messages.append(
                    {
                        "role": "assistant",
                        "content": " ".join(_sentence(rng, rng.randint(8, 30)) for _ in range(rng.randint(1, 5))),
                    }
                )
            line = json.dumps({"messages": messages}, ensure_ascii=False) + "\n"
            fh.write(line)
            written += len(line.encode())


def _tokenizer_dir() -> Path:
    models = Path(os.environ.get("CONSOLE_MODELS_DIR", ROOT / "var" / "models"))
    folder = models / "smollm2-135m-instruct"
    if not (folder / "tokenizer.json").exists():
        sys.exit(f"no tokenizer at {folder}: run the console once (or the tests) to convert the default model")
    return folder


def run_ours(path: Path) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench"))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from datasets.tokenizer import CountingTokenizer
    from datasets.validation import Validator

    # What the validation task loads: tokenizer.json and the chat template, without torch.
    tokenizer = CountingTokenizer.from_folder(_tokenizer_dir())
    started = time.perf_counter()
    with open(path, "rb", buffering=MIB) as fh, open(os.devnull, "w") as report:
        result = Validator(
            category=None,
            tokenizer=tokenizer,
            context_length=2048,
            advised_min_examples=300,
            report=report,
            progress=lambda n: True,
        ).run(fh)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "examples": result.examples,
        "tokens": result.tokens,
        "errors": result.error_count,
        "warnings": result.warning_count,
    }


def run_baseline(path: Path) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(_tokenizer_dir()))
    started = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    examples = tokens = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        ids = tokenizer.apply_chat_template(obj["messages"], tokenize=True)["input_ids"]
        tokens += len(ids)
        examples += 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "examples": examples, "tokens": tokens}


def child(which: str, path: Path) -> None:
    result = run_ours(path) if which == "ours" else run_baseline(path)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(which: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, "--file", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        sys.exit(f"{which} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    result["mb_per_s"] = size / MIB / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--also-1gb", action="store_true", help="also measure ours on a 1 GB file")
    parser.add_argument("--baseline-1gb", action="store_true", help="also run the baseline on 1 GB (slow)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = [args.size_mb] + ([1024] if args.also_1gb else [])
    rows = []
    for size in sizes:
        path = args.workdir / f"chat-{size}mb.jsonl"
        if not path.exists() or path.stat().st_size < size * MIB:
            print(f"generating {path} ({size} MiB)…", flush=True)
            generate(path, size)
        mb = path.stat().st_size / MIB
        ours = measure("ours", path)
        print(
            f"[{mb:7.1f} MiB] ours:     {ours['mb_per_s']:6.2f} MB/s  {ours['seconds']:7.1f} s  "
            f"peak {ours['maxrss_mb']:6.0f} MiB  {ours['examples']:,} examples  {ours['tokens']:,} tokens",
            flush=True,
        )
        baseline = None
        if size == args.size_mb or args.baseline_1gb:
            baseline = measure("baseline", path)
            print(
                f"[{mb:7.1f} MiB] baseline: {baseline['mb_per_s']:6.2f} MB/s  {baseline['seconds']:7.1f} s  "
                f"peak {baseline['maxrss_mb']:6.0f} MiB  {baseline['examples']:,} examples  "
                f"{baseline['tokens']:,} tokens",
                flush=True,
            )
            if baseline["tokens"] != ours["tokens"] or baseline["examples"] != ours["examples"]:
                sys.exit("token or example totals differ between ours and the baseline")
            print(
                f"[{mb:7.1f} MiB] speed-up: {ours['mb_per_s'] / baseline['mb_per_s']:.2f}x (target ≥ 3x); totals agree",
                flush=True,
            )
        rows.append((size, ours, baseline))
        if not args.keep:
            path.unlink()
    print("\nsize      ours MB/s  ours peak   baseline MB/s  baseline peak  ratio")
    for size, ours, baseline in rows:
        b_speed = f"{baseline['mb_per_s']:.2f}" if baseline else "-"
        b_peak = f"{baseline['maxrss_mb']:.0f} MiB" if baseline else "-"
        ratio = f"{ours['mb_per_s'] / baseline['mb_per_s']:.2f}x" if baseline else "-"
        print(
            f"{size:>5} MB  {ours['mb_per_s']:9.2f}  {ours['maxrss_mb']:6.0f} MiB  {b_speed:>13}  {b_peak:>13}  {ratio}"
        )


if __name__ == "__main__":
    main()
