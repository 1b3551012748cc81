"""`./run up`'s process manager: honcho, with a longer grace period on stop.

    python -m console.supervise start -f Procfile -d ROOT

honcho gives processes 5 s between SIGTERM and SIGKILL. A training worker needs
until the end of its current step to hand its task back, and a step of a large
model on a busy CPU can take longer than that, so the grace period here is
CONSOLE_STOP_GRACE seconds (default 15). Processes that stop sooner end sooner.
"""

from __future__ import annotations

import os
import sys

import honcho.manager
from honcho.command import main


def stop_grace() -> float:
    return float(os.environ.get("CONSOLE_STOP_GRACE", "15"))


if __name__ == "__main__":
    honcho.manager.KILL_WAIT = stop_grace()
    sys.exit(main(sys.argv[1:]))
