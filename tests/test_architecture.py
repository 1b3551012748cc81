"""The apps depend one way: console <- modelcards <- datasets <- jobs <- deployments (notifications beside
console). A lower app never imports a higher one, by module or by a model relation; higher apps react through
service calls, signals and the registries lower apps offer (console.dashboard, modelcards.cards)."""

from __future__ import annotations

import ast
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"console": 0, "notifications": 0, "modelcards": 1, "datasets": 2, "jobs": 3, "deployments": 4, "experience": 5}
# The project package's composition roots wire every app together (URLs, ASGI, the Celery app, settings).
COMPOSITION_ROOTS = {"console/urls.py", "console/api_urls.py", "console/asgi.py", "console/wsgi.py",
                     "console/celery.py", "console/settings.py"}


def allowed(importer: str, imported: str) -> bool:
    if importer == imported:
        return True
    if importer == "notifications" and imported == "console":
        return True  # console is also the project package (users, API plumbing)
    return LAYER[imported] < LAYER[importer] and not (importer == "console" and imported == "notifications")


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations() -> list[str]:
    out = []
    for app in LAYER:
        folder = ROOT / app
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in COMPOSITION_ROOTS:
                continue
            for lineno, module in imports_of(path):
                top = module.split(".")[0]
                if top in LAYER and not allowed(app, top):
                    out.append(f"{rel}:{lineno} imports {module}")
    return out


def test_no_app_imports_a_higher_one():
    assert violations() == []


def test_the_rule_catches_an_import_against_the_direction(tmp_path, monkeypatch):
    bad = ROOT / "modelcards" / "_architecture_probe.py"
    bad.write_text("def f():\n    from jobs.models import FineTuningJob\n    return FineTuningJob\n")
    try:
        assert "modelcards/_architecture_probe.py:2 imports jobs.models" in violations()
    finally:
        bad.unlink()


def test_no_model_relation_points_to_a_higher_app():
    wrong = []
    for model in apps.get_models():
        app = model._meta.app_label
        if app not in LAYER:
            continue
        for field in model._meta.get_fields():
            if field.is_relation and field.concrete and field.related_model is not None:
                target = field.related_model._meta.app_label
                if target in LAYER and not allowed(app, target):
                    wrong.append(f"{model.__name__}.{field.name} -> {target}")
    assert wrong == []
