"""The first moments of an instance process: prepare its model folder, then become the inference server.

``python -m deployments.launch --instance ID --port N`` (started by the node agent, its own process group,
output to the instance's log) converts the base model or merges a LoRA fine-tune when that was never done,
then ``exec``s the runtime's server, which keeps the pid the agent recorded. A failure here (weights missing,
an adapter that does not load) is printed to the log and the process exits non-zero: the agent shows the log's
last lines as the instance's error. ``--prepare MODEL_CODE`` only prepares a model's folder (the gateway uses it
for a public-pool model called for the first time) and prints it.
"""

from __future__ import annotations

import argparse
import os
import sys


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()


def prepare_model(code: str) -> str:
    from modelcards.models import BaseModel, FineTunedModel

    from .targets import prepare, target_of

    model = FineTunedModel.objects.live().filter(code=code).first() or BaseModel.objects.get(code=code)
    return str(prepare(target_of(model)))


def launch(instance_id: int, host: str, port: int) -> None:
    from .models import Instance, Node
    from .runtimes import get_runtime
    from .targets import prepare, target_of

    instance = Instance.objects.select_related(
        "deployment__base_model", "deployment__fine_tuned_model__base_model", "node"
    ).get(pk=instance_id)
    runtime = get_runtime(instance.runtime)
    deployment = instance.deployment
    target = target_of(deployment.model)  # a pool's is its base model
    print(f"[launch] preparing {target.code} ({target.folder})", flush=True)
    prepare(target, merge=not runtime.serves_adapters)
    api_key = os.environ.pop("SERVING_API_KEY", "")
    node: Node = instance.node
    cmd = runtime.command(
        target=target, host=host, port=port, served_name=deployment.served_name, pool=deployment.is_pool
    )
    env = {**os.environ, **runtime.environment(omp_threads=node.omp_threads, api_key=api_key)}
    print(f"[launch] exec {' '.join(cmd)}", flush=True)
    from django.db import connections

    connections.close_all()
    os.execvpe(cmd[0], cmd, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.launch")
    parser.add_argument("--instance", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--prepare", metavar="MODEL_CODE")
    args = parser.parse_args(argv)
    _setup()
    if args.prepare:
        print(prepare_model(args.prepare), flush=True)
        return 0
    try:
        launch(args.instance, args.host, args.port)
    except Exception as exc:  # noqa: BLE001 - the reason goes to the log the page shows
        print(f"[launch] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
