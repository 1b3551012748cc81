"""Errors stored before a load failure's message was cut down for its owner.

The node agent kept the last lines of a failed instance's log (tracebacks, the paths of weights and libraries) in
``Instance.error``; its deployment copied them to ``status_reason`` and to a "Failed: …" event, which the owner
reads on the page and through the API. Each becomes what the agent writes now: how the server ended and the last
exception of those lines, each server path cut to its last part. (The rules are copied from console/errors.py: a
migration does not follow later changes of the code.)"""

import re

from django.db import migrations

TAIL = "Last lines of its log:"
NAMED_EXCEPTION = re.compile(r"(?:^|\]\s)((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?::\s.*)?)$")
RAISED = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?::\s.*)?$")
SERVER_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)+([\w.@+~-]+)")
EXCEPTION_CHARS = 300


def last_exception(log: str) -> str:
    found, in_traceback = "", False
    for raw in log.splitlines():
        line = raw.strip()
        if line.endswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if in_traceback and line and not raw[:1].isspace():
            in_traceback = False
            if RAISED.match(line):
                found = line
                continue
        named = NAMED_EXCEPTION.search(line)
        if named:
            found = named.group(1)
    shown = SERVER_PATH.sub(r"…/\1", found)
    return shown if len(shown) <= EXCEPTION_CHARS else shown[: EXCEPTION_CHARS - 1] + "…"


def without_log_tail(text: str) -> str:
    """``text`` up to its log's last lines, and the last exception among them; ``text`` itself without a log."""
    head, found, tail = text.partition(TAIL)
    if not found:
        return text
    head = head.strip()
    exception = last_exception(tail)
    return f"{head.rstrip('.')}: {exception}" if exception else head


def cut_log_tails(apps, schema_editor):
    for model, field in (("Instance", "error"), ("Deployment", "status_reason"), ("DeploymentEvent", "message")):
        rows = apps.get_model("deployments", model).objects.filter(**{f"{field}__contains": TAIL})
        for row in rows.iterator():
            setattr(row, field, without_log_tail(getattr(row, field)))
            row.save(update_fields=[field])


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0004_merged_export"),
    ]

    operations = [
        migrations.RunPython(cut_log_tails, migrations.RunPython.noop),
    ]
