"""The apps depend one way: common <- ops <- console <- accounts <- notifications <- modelcards <- datasets
<- jobs <- deployments <- experience (common/ is the library every app uses, ops/ the process tooling
that may use it; neither imports an app; console/ is the project package and page shell, accounts/ the
users and API keys).
A lower app never imports a higher one, by module or by a model relation; higher apps react through
service calls, signals and the registries lower apps offer (console.dashboard, console.shell, modelcards.cards,
datasets.next_steps, datasets.uploads, notifications.events). The same holds for what imports cannot show: a template
neither links to ({% url %}), loads the tag library of, nor includes a higher app, and no Python string names a
higher app's page (a /console/ or /api/ path, or a URL name). Only the project package's composition roots are
exempt; the site-wide templates/ folder is console's page shell and is checked as console."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent
LAYER = {
    "common": -2,
    "ops": -1,
    "console": 0,
    "accounts": 1,
    "notifications": 2,
    "modelcards": 3,
    "datasets": 4,
    "jobs": 5,
    "deployments": 6,
    "experience": 7,
}
# The project package's composition roots wire every app together (URLs, ASGI, the Celery app, settings).
COMPOSITION_ROOTS = {
    "console/urls.py",
    "console/api_urls.py",
    "console/asgi.py",
    "console/wsgi.py",
    "console/celery.py",
    "console/settings.py",
}


def allowed(importer: str, imported: str) -> bool:
    if importer == imported:
        return True
    return LAYER[imported] < LAYER[importer]


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


# --- Templates and path strings: links the import graph cannot see -----------------------------------------------
# A template belongs to the app whose folder holds it; the site-wide templates/ folder is the page shell that
# console's context processor fills (console/shell.py), so it is console's, checked like the rest, not exempt.
URL_TAG = re.compile(r"""{%\s*url\s+['"]([\w-]+):[\w-]+['"]""")
LOAD_TAG = re.compile(r"{%\s*load\s+([^%]+?)\s*%}")
TEMPLATE_REF = re.compile(r"""{%\s*(?:include|extends)\s+['"]([\w-]+)/""")
CONSOLE_PATH = re.compile(r"""["'](/(?:console|api)/[^"'{}\s?#]*)""")
URL_NAME = re.compile(r"^([a-z_]+):[a-z_]+$")


def app_of_module(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in LAYER else None


def namespace_apps() -> dict[str, str]:
    """Each URL namespace → the app whose views it serves (playground → experience)."""
    from django.urls import URLPattern, URLResolver, get_resolver

    found: dict[str, str] = {}

    def views_of(resolver: URLResolver):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLPattern):
                yield entry.callback
            else:
                yield from views_of(entry)

    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace:
            tops = {(getattr(view, "__module__", "") or "").split(".")[0] for view in views_of(entry)}
            if len(tops) == 1 and (top := tops.pop()) in LAYER:  # admin's, for one, is Django's
                found[entry.namespace] = top
    return found


def app_of_path(path: str) -> str | None:
    from django.urls import Resolver404, resolve

    parts = [p for p in path.split("/") if p]
    for n in range(len(parts), 0, -1):
        candidate = "/" + "/".join(parts[:n]) + ("/" if n < len(parts) or path.endswith("/") else "")
        for tried in (candidate, candidate.rstrip("/"), candidate.rstrip("/") + "/"):
            try:
                match = resolve(tried)
            except Resolver404:
                continue
            return app_of_module(match.func.__module__)
    return None


def library_apps() -> dict[str, str]:
    from django.template import engines

    return {
        name: app_of_module(module)
        for name, module in engines["django"].engine.libraries.items()
        if app_of_module(module)
    }


def template_owner(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "templates":
        return "console"
    return rel[0] if rel[0] in LAYER and "templates" in rel else None


def template_violations() -> list[str]:
    namespaces, libraries, out = namespace_apps(), library_apps(), []
    files = [p for app in [*LAYER, "templates"] if (ROOT / app).is_dir() for p in (ROOT / app).rglob("*.html")]
    for path in sorted(files):
        owner = template_owner(path)
        if owner is None:
            continue
        rel = path.relative_to(ROOT).as_posix()
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            targets = [(f"links to {ns}:", namespaces.get(ns)) for ns in URL_TAG.findall(line)]
            for names in LOAD_TAG.findall(line):
                targets += [(f"loads {name}", libraries.get(name)) for name in names.split()]
            targets += [(f"includes {app}/", app) for app in TEMPLATE_REF.findall(line)]
            targets += [(f"names the path {p}", app_of_path(p)) for p in CONSOLE_PATH.findall(line)]
            out += [f"{rel}:{lineno} {what}" for what, app in targets if app in LAYER and not allowed(owner, app)]
    return out


def path_string_violations() -> list[str]:
    """Python strings that name a higher app's pages: a path under /console/ or /api/, or a URL name."""
    namespaces, out = namespace_apps(), []
    for app in LAYER:
        folder = ROOT / app
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
            rel = path.relative_to(ROOT).as_posix()
            if rel in COMPOSITION_ROOTS or "/migrations/" in rel:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                    continue
                text = node.value
                target = None
                if text.startswith(("/console/", "/api/")):
                    target = app_of_path(text.split("?")[0])
                elif (named := URL_NAME.match(text)) and named.group(1) in namespaces:
                    target = namespaces[named.group(1)]
                if target and not allowed(app, target):
                    out.append(f"{rel}:{node.lineno} names {text!r} of {target}")
    return out


def test_no_template_links_loads_or_includes_a_higher_app():
    assert template_violations() == []


def test_no_python_string_names_a_higher_apps_page():
    assert path_string_violations() == []


def test_the_template_and_path_rules_catch_links_against_the_direction():
    template = ROOT / "modelcards" / "templates" / "modelcards" / "_architecture_probe.html"
    module = ROOT / "datasets" / "_architecture_probe.py"
    template.write_text(
        "{% load i18n datasets_tags %}<a href=\"{% url 'deployments:create' %}\">\n"
        '{% include "jobs/_status_badge.html" %}<a href="/console/playground/">\n'
    )
    module.write_text('NEXT = "/console/jobs/create/"\nNAME = "deployments:list"\n')
    shell = ROOT / "templates" / "_architecture_probe.html"
    shell.write_text("{% load notifications_tags %}\n")
    try:
        found = template_violations()
        assert "modelcards/templates/modelcards/_architecture_probe.html:1 links to deployments:" in found
        assert "modelcards/templates/modelcards/_architecture_probe.html:1 loads datasets_tags" in found
        assert "modelcards/templates/modelcards/_architecture_probe.html:2 includes jobs/" in found
        assert "modelcards/templates/modelcards/_architecture_probe.html:2 names the path /console/playground/" in found
        assert "templates/_architecture_probe.html:1 loads notifications_tags" in found
        strings = path_string_violations()
        assert "datasets/_architecture_probe.py:1 names '/console/jobs/create/' of jobs" in strings
        assert "datasets/_architecture_probe.py:2 names 'deployments:list' of deployments" in strings
    finally:
        for probe in (template, module, shell):
            probe.unlink()
