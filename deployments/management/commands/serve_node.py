"""``manage.py serve_node``: the node agent of this serving machine (see deployments/agent.py)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from deployments.agent import NodeAgent, default_node_name, default_sizing


class Command(BaseCommand):
    help = "Run this machine's serving node agent: it starts, checks and stops the inference instances assigned to it."

    def add_arguments(self, parser):
        slots, threads = default_sizing()
        parser.add_argument("--name", default=default_node_name(), help="Node name (default: local).")
        parser.add_argument("--slots", type=int, default=slots, help=f"Instances this node runs (default {slots}).")
        parser.add_argument(
            "--threads", type=int, default=threads, help=f"OMP_NUM_THREADS of each instance (default {threads})."
        )
        parser.add_argument(
            "--runtime",
            default=settings.SERVING_RUNTIME,
            choices=["auto", "vllm", "transformers"],
            help="auto (default): vLLM when VLLM_PYTHON runs on this machine, else transformers serve.",
        )
        parser.add_argument("--host", default="127.0.0.1", help="Address instances bind to (default loopback).")
        parser.add_argument(
            "--advertise-host",
            default="",
            help="Address the web servers reach instances at (default: --host, or this machine's name for 0.0.0.0).",
        )
        parser.add_argument(
            "--keep-instances",
            action="store_true",
            help="On SIGTERM leave instances running, for the next agent to adopt.",
        )

    def handle(self, *args, **options):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health check
        from deployments.runtimes import choose

        runtime, note = choose(options["runtime"])
        if note:
            logging.getLogger("deployments.agent").warning("%s", note)
        NodeAgent(
            name=options["name"],
            slots=options["slots"],
            omp_threads=options["threads"],
            runtime=runtime,
            runtime_note=note,
            host=options["host"],
            advertise_host=options["advertise_host"],
            keep_instances=options["keep_instances"],
        ).run()
