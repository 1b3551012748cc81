"""Everything the console writes is readable by its own OS user only.

The umask is set when the settings load (every entry point: manage.py, the web, the Celery workers and beat, the
node agent) and by ``./run``; files saved through the storage API are chmodded to FILE_UPLOAD_PERMISSIONS (0600).
At start the console also takes group and other access off what an older version left readable
(``var_modes_fix``), and says so."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

UMASK = 0o077  # new files 0600, new folders 0700


def restrict_umask() -> None:
    os.umask(UMASK)


def var_modes_fix(*, roots: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Take group and other permissions off every file and folder under ``roots`` (the roots too; symbolic
    links are not followed). Returns (what was changed, what could not be changed with the reason)."""
    fixed: list[Path] = []
    failed: list[tuple[Path, str]] = []

    def fix(path: Path) -> None:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return  # removed meanwhile (a temporary file of another process)
        if stat.S_ISLNK(mode) or not mode & 0o077:
            return
        try:
            os.chmod(path, stat.S_IMODE(mode) & ~0o077)
            fixed.append(path)
        except OSError as exc:
            failed.append((path, exc.strerror or str(exc)))

    seen: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists() or any(root == s or s in root.parents for s in seen):
            continue
        seen.add(root)
        fix(root)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                fix(Path(dirpath) / name)
    return fixed, failed


def var_modes_check() -> None:
    """At start: fix and report files and folders of the console that other OS users could read."""
    from django.conf import settings

    # Not CONSOLE_MODELS_DIR when the operator points it outside var/: a shared folder of weights is theirs.
    roots = [Path(settings.VAR_DIR), Path(settings.MEDIA_ROOT), Path(settings.EMAIL_FILE_PATH)]
    fixed, failed = var_modes_fix(roots=roots)
    if fixed:
        shown = ", ".join(str(p) for p in fixed[:5]) + (f" and {len(fixed) - 5} more" if len(fixed) > 5 else "")
        logger.warning(
            "%d files and folders of the console were readable by other users of this machine (left by an older "
            "version): %s. They are now readable by %s only. Whoever could read them may have copied the database "
            "(sessions, API key hashes) and training data: consider changing SECRET_KEY, which signs sessions and "
            "API keys.",
            len(fixed),
            shown,
            _user_name(),
        )
    for path, reason in failed:
        logger.warning(
            "%s is readable by other users of this machine and its mode could not be changed (%s): "
            "chmod go-rwx it as its owner.",
            path,
            reason,
        )


def _user_name() -> str:
    try:
        import pwd

        return f"the console's user ({pwd.getpwuid(os.geteuid()).pw_name})"
    except (ImportError, KeyError):
        return "the console's user"
