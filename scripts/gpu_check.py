"""What the console does on a machine with an NVIDIA GPU, measured (``scripts/gpu_check.sh`` runs it).

Training: our engine with its GPU defaults (bf16 autocast, frozen weights in bf16, fp32 LoRA weights) against a
plain transformers ``Trainer`` (fp32 weights, ``bf16=True`` autocast, padded batches) on the same work as
``tests/perf/bench_training.py`` (SmolLM2-135M's shape, LoRA r16/alpha32 on all linear layers, batch 8, 196 short
chat examples), each in a fresh process, one after the other in this run: tokens/s, peak GPU memory, final loss,
and the ratio. Serving, when vLLM's CUDA build is installed: the base model on ``vllm`` with two adapters
(``--enable-lora``), time to healthy and to the first answer, each adapter answering, and 1 and 8 concurrent
streams' tokens/s; without vLLM it says so and skips that half.

``--model DIR`` is the default base model's folder (``var/models/smollm2-135m-instruct``, made by the console
on first use). A folder with only ``config.json`` and the tokenizer files (what fits on a machine that cannot
download) gets random weights of that shape: the speeds are the same, the losses are not the model's.

    .venv/bin/python scripts/gpu_check.py [--model DIR] [--epochs 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "perf"))
from workload import peer_like_examples, trainer_rows  # noqa: E402  (the benchmarks' examples: standard library only)

DEFAULT_MODEL = Path(os.environ.get("CONSOLE_MODELS_DIR") or REPO / "var" / "models") / "smollm2-135m-instruct"


def ensure_weights(model: Path, work: Path) -> tuple[Path, bool]:
    """``model`` if it has weights, else a copy of its config and tokenizer with random weights of its shape."""
    if any(model.glob("*.safetensors")):
        return model, False
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = work / "random-weights"
    if not out.exists():
        shutil.copytree(model, out)
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(str(model))
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(str(out))
    return out, True


# ---------------------------------------------------------------- the contenders, each in its own process


def _peak_reset() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb() -> float:
    import torch

    if not torch.cuda.is_available():
        return 0.0
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def run_ours(model: Path, examples: list[dict], epochs: int, out: Path) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from jobs.training import TrainingConfig, train

    config = TrainingConfig(
        n_epochs=epochs,
        batch_size=8,
        learning_rate=2e-3,
        lora_r=16,
        lora_alpha=32,
        lora_target="all-linear",
        checkpoint_interval=None,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )
    _peak_reset()
    started = time.perf_counter()
    result = train(model_dir=model, train_examples=examples, eval_examples=None, config=config, output_dir=out)
    peak = _peak_mb()
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "final_loss": result.final_loss,
        "steps": result.steps,
        "peak_gpu_mb": peak,
        "adapter": str(result.output_dir),
    }


def run_hf(model: Path, examples: list[dict], epochs: int, out: Path) -> dict:
    """A plain transformers Trainer as its documentation has it for a GPU: fp32 weights, bf16 autocast."""
    import math

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    # The Trainer took Hugging Face's "datasets" (if installed); the renderer needs the repository's app of that
    # name: import it aside, then put Hugging Face's back.
    hf = {n: m for n, m in sys.modules.items() if n == "datasets" or n.startswith("datasets.")}
    for name in hf:
        del sys.modules[name]
    sys.path.insert(0, str(REPO))
    from jobs.training.render import Renderer

    for name in [n for n in sys.modules if n == "datasets" or n.startswith("datasets.")]:
        del sys.modules[name]
    sys.modules.update(hf)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    renderer = Renderer(tokenizer, 2048)
    rows = trainer_rows(renderer, examples)
    loaded = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(loaded, lora)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=8,
        num_train_epochs=epochs,
        learning_rate=2e-3,
        lr_scheduler_type="linear",
        warmup_steps=math.ceil(0.03 * math.ceil(len(rows) / 8) * epochs),
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        bf16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        seed=42,
    )
    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=rows,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
    )
    _peak_reset()
    started = time.perf_counter()
    output = trainer.train()
    peak = _peak_mb()
    wall = time.perf_counter() - started
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]  # the last steps' loss, as ours reports
    return {
        "wall_s": wall,
        "final_loss": logged[-1] if logged else output.training_loss,
        "steps": output.global_step,
        "peak_gpu_mb": peak,
    }


# ---------------------------------------------------------------- serving on vLLM


def check_vllm(model: Path, adapters: dict[str, str]) -> dict:
    """The base model on vLLM with two adapters; the key is passed in the environment, never the command line."""
    import concurrent.futures
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = os.urandom(16).hex()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--enable-lora",
        "--max-loras",
        "4",
        "--max-lora-rank",
        "16",
        "--gpu-memory-utilization",
        "0.3",
        "--lora-modules",
        *[f"{name}={path}" for name, path in adapters.items()],
    ]
    env = {**os.environ, "VLLM_API_KEY": key, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    log = open(Path(tempfile.gettempdir()) / "gpu_check_vllm.log", "wb")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def call(model_name: str, max_tokens: int = 64, stream: bool = False) -> tuple[float, int]:
        body = {
            "model": model_name,
            "messages": [{"role": "user", "content": "How do I fix my router?"}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        request = urllib.request.Request(
            f"{base}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        t0, first, tokens = time.perf_counter(), None, 0
        with urllib.request.urlopen(request, timeout=300) as response:
            if not stream:
                data = json.loads(response.read())
                return time.perf_counter() - t0, data["usage"]["completion_tokens"]
            for line in response:
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    if first is None and chunk.get("choices"):
                        first = time.perf_counter() - t0
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
        return first or 0.0, tokens

    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm exited ({proc.returncode}); see {log.name}")
            if time.perf_counter() - started > 600:
                raise RuntimeError("vllm not healthy after 600 s")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        healthy = time.perf_counter() - started
        call(str(model), max_tokens=8)
        first_answer = time.perf_counter() - started
        out = {"healthy_s": healthy, "first_answer_s": first_answer}
        for name in adapters:
            out[f"adapter_{name}_tokens"] = call(name, max_tokens=16)[1]
        for streams in (1, 8, 32):
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(streams) as pool:
                results = list(pool.map(lambda i: call(list(adapters)[i % 2], 128, True), range(streams)))
            wall = time.perf_counter() - t0
            ttfts = sorted(r[0] for r in results)
            out[f"streams_{streams}"] = {
                "tokens_per_s": sum(r[1] for r in results) / wall,
                "median_ttft_s": ttfts[len(ttfts) // 2],
            }
        return out
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        log.close()


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="where to write gpu_check.json")
    parser.add_argument("--examples", type=int, default=196)
    parser.add_argument("--cpu", action="store_true", help="run the training half on the CPU (a smoke test)")
    parser.add_argument("--contender", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    if args.contender:  # one contender, in this fresh process
        examples = json.loads((args.result.parent / "examples.json").read_text())
        run = run_ours if args.contender == "ours" else run_hf
        result = run(args.model, examples, args.epochs, args.result.parent / args.contender)
        args.result.write_text(json.dumps(result))
        return 0

    if not torch.cuda.is_available() and not args.cpu:
        print("No CUDA GPU here: nothing to check.")
        return 2
    import peft
    import transformers

    report: dict = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (--cpu)",
        "cpu": platform.processor() or platform.machine(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    print(f"GPU: {report['gpu']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        model, random_weights = ensure_weights(args.model, work)
        report["random_weights"] = random_weights
        if random_weights:
            print(
                f"{args.model} has no weights: random weights of its shape (speeds are real, losses are not "
                "the model's)",
                flush=True,
            )
        tokenizer = AutoTokenizer.from_pretrained(str(model))
        examples = peer_like_examples(tokenizer, n=args.examples)
        tokens = (
            sum(len(tokenizer.apply_chat_template(e["messages"], tokenize=True, return_dict=False)) for e in examples)
            * args.epochs
        )
        (work / "examples.json").write_text(json.dumps(examples))
        for contender in ("ours", "hf"):
            result_file = work / f"{contender}.json"
            cmd = [
                sys.executable,
                __file__,
                "--contender",
                contender,
                "--model",
                str(model),
                "--epochs",
                str(args.epochs),
                "--result",
                str(result_file),
            ]
            subprocess.run(cmd, check=True)
            result = json.loads(result_file.read_text())
            result["tokens_per_s"] = tokens / result["wall_s"]
            report[contender] = result
            print(
                f"training {contender:4}: {result['tokens_per_s']:8.0f} tokens/s ({tokens} tokens in "
                f"{result['wall_s']:.1f} s, {result['steps']} steps), peak GPU memory "
                f"{result['peak_gpu_mb']:.0f} MB, final loss {result['final_loss'] or float('nan'):.3f}",
                flush=True,
            )
        report["ours_vs_hf"] = report["ours"]["tokens_per_s"] / report["hf"]["tokens_per_s"]
        report["memory_ours_vs_hf"] = report["ours"]["peak_gpu_mb"] / max(report["hf"]["peak_gpu_mb"], 1e-9)
        print(
            f"ours / plain Trainer: {report['ours_vs_hf']:.2f}x the speed, {report['memory_ours_vs_hf']:.2f}x "
            "the peak GPU memory",
            flush=True,
        )

        try:
            import vllm  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - not installed, or its CUDA libraries do not load
            report["vllm"] = f"not run: vllm does not import here ({type(exc).__name__}: {exc})"
            print(f"serving: {report['vllm']}", flush=True)
        else:
            adapter = report["ours"]["adapter"]
            try:
                report["vllm"] = check_vllm(model, {"tune-a": adapter, "tune-b": adapter})
            except Exception as exc:  # noqa: BLE001 - reported, the training half still counts
                report["vllm"] = f"failed: {type(exc).__name__}: {exc}"
            print(f"serving: {json.dumps(report['vllm'])}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
