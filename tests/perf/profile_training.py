"""Where a training step's time goes: our engine against the plain ``Trainer``, on the ``bench_training.py`` work.

``bench_training.py`` says how fast each contender is; this says why. Each contender runs one epoch in its own
process under ``torch.profiler`` (CPU), and the script prints, side by side:

* **the work**: the multiply-adds each contender has to do for that epoch, counted from the model's shapes and the
  batches it really builds. Ours packs the examples end to end and runs the LM head only where a label is; the
  Trainer pads every batch to its longest example and computes logits at every position. Frozen linears cost a
  forward and an input-gradient pass, LoRA's adapters a forward and both backward passes.
* **the time**, grouped by kind of op (matrix products, attention, the loss, the optimizer, the rest), and the
  rate the matrix products ran at (GFLOP/s).

Together they bound what any engine can gain over the Trainer on this CPU: if both run their products at the
same rate, the gain is at most the ratio of the work. Profiling slows both by a few percent; the absolute times
are not ``bench_training.py``'s, the shares and rates are.

    .venv/bin/python tests/perf/profile_training.py                 # ours fp32 vs Trainer fp32, 1 epoch
    .venv/bin/python tests/perf/profile_training.py --only ours ours-bf16 hf hf-bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_training  # noqa: E402  (beside this script; imports Hugging Face's datasets first)
from workload import peer_like_examples, trainer_rows  # noqa: E402

CATEGORIES = [
    ("matrix products", ("mm", "linear_pointwise", "matmul", "addmm", "bmm", "baddbmm")),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "_sdpa", "attention")),
    ("loss and head", ("cross_entropy", "log_softmax", "nll_loss", "_softmax_backward")),
    ("optimizer", ("adam", "_foreach", "clip_grad", "norm")),
]


def category(name: str) -> str:
    lowered = name.lower()
    for label, needles in CATEGORIES:
        if any(n in lowered for n in needles):
            return label
    return "the rest (elementwise, copies, norms, framework)"


def shapes(model_dir: Path) -> dict:
    """Multiply-adds a token costs in the decoder's frozen linears, in LoRA's adapters (r16, all linear) and in
    the LM head, from the model's config."""
    config = json.loads((model_dir / "config.json").read_text())
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim", h // heads)
    linears = [(h, heads * head_dim), (h, kv * head_dim), (h, kv * head_dim), (heads * head_dim, h)]
    linears += [(h, inter), (h, inter), (inter, h)]
    r = 16
    return {
        "frozen": layers * sum(i * o for i, o in linears),
        "lora": layers * sum(r * (i + o) for i, o in linears),
        "head": h * config["vocab_size"],
        "layers": layers,
        "attention_width": heads * head_dim,
    }


def work(examples: list[dict], model_dir: Path, batch: int = 8, shuffles: int = 20) -> dict:
    """GFLOP an epoch for each way of batching (ours packed, the Trainer padded), analytically."""
    from transformers import AutoTokenizer

    Renderer = bench_training.import_renderer()  # noqa: N806
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    rows = trainer_rows(Renderer(tokenizer, 2048), examples)
    lengths = [len(r["input_ids"]) for r in rows]
    labelled = [sum(1 for t in r["labels"] if t != -100) for r in rows]
    s = shapes(model_dir)
    real = sum(lengths)
    # the Trainer's random sampler: the expected padded size over a few shuffles
    padded = hf_pairs = 0.0
    for seed in range(shuffles):
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        for k in range(0, len(order), batch):
            longest, n = max(lengths[i] for i in order[k : k + batch]), len(order[k : k + batch])
            padded += longest * n
            hf_pairs += longest * longest * n  # a padded batch attends over its whole square
    padded, hf_pairs = padded / shuffles, hf_pairs / shuffles

    def gflop(tokens: float, head_rows: float, attn_pairs: float) -> float:
        macs = tokens * (2 * s["frozen"] + 3 * s["lora"]) + head_rows * 2 * s["head"]
        # attention scores and weighted sum, forward and the two backward products
        macs += attn_pairs * s["layers"] * s["attention_width"] * 2 * 3
        return 2 * macs / 1e9

    ours_pairs = sum(n * (n + 1) / 2 for n in lengths)  # causal, per example
    return {
        "real_tokens": real,
        "padded_tokens": padded,
        "label_tokens": sum(labelled),
        "ours_gflop": gflop(real, sum(labelled), ours_pairs),
        "hf_gflop": gflop(padded, padded, hf_pairs),
        "share_of_head_in_hf": padded * 2 * s["head"] / (gflop(padded, padded, hf_pairs) * 1e9 / 2),
    }


def child(name: str, args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bench_training.MODEL_DIR))
    examples = peer_like_examples(tokenizer, args.examples)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = bench_training.RUNNERS[name](examples, args)
    groups: dict[str, float] = {}
    top = []
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        groups[category(event.key)] = groups.get(category(event.key), 0.0) + seconds
        top.append((seconds, event.key, event.count))
    top.sort(reverse=True)
    # the profiler's main-thread self time is wall time spent in each op (intra-op threads run inside it)
    return {
        "wall_s": result["wall_s"],
        "groups": groups,
        "top": [{"op": k, "seconds": s, "calls": c} for s, k, c in top[:12]],
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=196)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--only", nargs="+", choices=sorted(bench_training.RUNNERS), default=["ours", "hf"])
    parser.add_argument("--child", choices=sorted(bench_training.RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--busy", action="store_true", help="measure even though the machine is busy")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    args.epochs, args.no_packing = 1, False
    if not args.threads:
        args.threads = bench_training.physical_cores()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    import machine
    from transformers import AutoTokenizer

    machine.require_quiet(args.busy)
    print(machine.report(args.threads), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(bench_training.MODEL_DIR))
    examples = peer_like_examples(tokenizer, args.examples)
    w = work(examples, bench_training.MODEL_DIR)
    print(
        f"one epoch of {len(examples)} examples: {w['real_tokens']} tokens, {w['label_tokens']} of them labelled; "
        f"the Trainer's padded batches hold {w['padded_tokens']:.0f} ({w['padded_tokens'] / w['real_tokens']:.2f}x)"
    )
    print(
        f"work (GFLOP, analytic): ours {w['ours_gflop']:.0f} (packed, head on labels), Trainer {w['hf_gflop']:.0f} "
        f"(padded, head everywhere: {w['share_of_head_in_hf']:.0%} of it): at equal rates ours can be at most "
        f"{w['hf_gflop'] / w['ours_gflop']:.2f}x as fast",
        flush=True,
    )
    results = {}
    for name in args.only:
        cmd = [sys.executable, __file__, "--child", name, "--examples", str(args.examples)]
        cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=bench_training.REPO, env=os.environ)
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode or not line.startswith("{"):
            print(f"{name} failed:\n{proc.stderr[-3000:]}")
            continue
        results[name] = json.loads(line)
    labels = sorted(
        {g for r in results.values() for g in r["groups"]},
        key=lambda g: -max(r["groups"].get(g, 0) for r in results.values()),
    )
    names = list(results)
    print("\nseconds of the epoch, by kind of op (profiled)")
    print(f"{'':50s}" + "".join(f"{n:>14s}" for n in names))
    for g in labels:
        print(f"{g:50s}" + "".join(f"{results[n]['groups'].get(g, 0.0):14.1f}" for n in names))
    print(f"{'wall (the whole run, profiler on)':50s}" + "".join(f"{results[n]['wall_s']:14.1f}" for n in names))
    for n in names:
        gflop = w["hf_gflop"] if n.startswith("hf") else w["ours_gflop"]
        products = results[n]["groups"].get("matrix products", 0.0) + results[n]["groups"].get("attention", 0.0)
        rate = gflop / products if products else math.nan
        print(f"{n}: {gflop:.0f} GFLOP of products and attention in {products:.1f} s = {rate:.0f} GFLOP/s")
    for n in names:
        print(f"\n{n}: the ops that took longest (self time)")
        for t in results[n]["top"]:
            print(f"  {t['seconds']:8.2f} s  {t['calls']:7d} calls  {t['op']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"work": w, "results": results}, indent=2))


if __name__ == "__main__":
    main()
