"""Training and serving on CPUs of their own (console/cpus.py): the default split, explicit lists, the training
worker and an instance pinned to theirs, and what a task's events and the node say."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from console import cpus


def test_the_default_gives_serving_a_quarter_and_training_the_rest(settings, monkeypatch):
    settings.TRAINING_CPUS = settings.SERVING_CPUS = "auto"
    for machine, training, serving in (
        ([0], [0], [0]),  # one CPU: shared
        ([0, 1], [0], [1]),
        ([0, 1, 2, 3], [0, 1, 2], [3]),
        (list(range(16)), list(range(12)), list(range(12, 16))),
    ):
        monkeypatch.setattr(cpus, "_MACHINE", machine)
        assert cpus.split() == (training, serving)
    monkeypatch.setattr(cpus, "_MACHINE", [0, 1, 2, 3])
    assert cpus.describe().startswith("training on 3 of 4 CPU(s) (0-2), serving on 1 (3)")
    settings.TRAINING_CPUS, settings.SERVING_CPUS = "0-1, 3", "all"
    assert cpus.split() == ([0, 1, 3], [0, 1, 2, 3]) and "(shared)" in cpus.describe()
    settings.TRAINING_CPUS = "7-9"
    with pytest.raises(ImproperlyConfigured, match="TRAINING_CPUS: '7-9' names none of this machine's CPUs"):
        cpus.split()
    assert cpus.format_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_pinned_process_and_its_children_run_only_on_their_cpus():
    # The node agent starts each instance with the same pin (preexec), the training worker pins itself.
    first = sorted(os.sched_getaffinity(0))[:1]
    probe = "import os; print(sorted(os.sched_getaffinity(0)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, preexec_fn=lambda: cpus.pin(first)
    )
    assert out.stdout.strip() == str(first)
    threads = subprocess.run(
        [sys.executable, "-c", "from jobs.training.engine import physical_cores; print(physical_cores())"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: cpus.pin(first),
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    assert threads.stdout.strip().splitlines()[-1] == "1", threads.stderr  # torch's threads follow the pin


@pytest.mark.django_db
def test_a_node_says_which_cpus_its_instances_have(settings, monkeypatch):
    from deployments.agent import NodeAgent, default_sizing

    monkeypatch.setattr(cpus, "_MACHINE", [0, 1, 2, 3, 4, 5, 6, 7])
    settings.TRAINING_CPUS = settings.SERVING_CPUS = "auto"
    node = NodeAgent(name="cpu-node", slots=2, omp_threads=default_sizing()[1]).register()
    assert node.cpus == "6-7" and node.omp_threads == 2
