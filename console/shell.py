"""The page shell's slots that the apps fill (templates/base.html and the account page draw them).

console is the lowest app, so it names no other app's URL or template: each app adds its pieces from its
``AppConfig.ready()``:

- ``register_nav_item(name, order, url_name, label, icon)``: a side navigation entry (left out while its URL does
  not exist);
- ``register_user_menu_link(name, order, url_name, label)``: a link in the top bar's user menu;
- ``register_topbar(name, order, render)`` and ``register_account_section(name, order, render)``: HTML beside the
  user menu (the notifications badge) or below the account form (the phone binding), where ``render(request)``
  returns the HTML or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString, mark_safe


@dataclass(frozen=True)
class Link:
    name: str
    order: int
    url_name: str
    label: object
    icon: str = ""


@dataclass(frozen=True)
class Slot:
    name: str
    order: int
    render: Callable


_nav: dict[str, Link] = {}
_user_menu: dict[str, Link] = {}
_topbar: dict[str, Slot] = {}
_account: dict[str, Slot] = {}


def register_nav_item(name: str, order: int, url_name: str, label, icon: str) -> None:
    _nav[name] = Link(name, order, url_name, label, icon)


def register_user_menu_link(name: str, order: int, url_name: str, label) -> None:
    _user_menu[name] = Link(name, order, url_name, label)


def register_topbar(name: str, order: int, render: Callable) -> None:
    _topbar[name] = Slot(name, order, render)


def register_account_section(name: str, order: int, render: Callable) -> None:
    _account[name] = Slot(name, order, render)


def _ordered(registry: dict) -> list:
    return sorted(registry.values(), key=lambda item: (item.order, item.name))


def _links(registry: dict[str, Link]) -> list[tuple[Link, str]]:
    out = []
    for link in _ordered(registry):
        try:
            out.append((link, reverse(link.url_name)))
        except NoReverseMatch:
            continue
    return out


def navigation(request) -> list[dict]:
    items = []
    for link, url in _links(_nav):
        active = request.path == url if link.name == "overview" else request.path.startswith(url)
        items.append({"url": url, "label": link.label, "icon": link.icon, "active": active})
    return items


def user_menu(request) -> list[dict]:
    return [{"url": url, "label": link.label} for link, url in _links(_user_menu)]


def _render(registry: dict[str, Slot], request) -> list[SafeString]:
    out = []
    for slot in _ordered(registry):
        html = slot.render(request)
        if html:
            out.append(mark_safe(html))  # noqa: S308 - rendered by the registering app's templates
    return out


def topbar(request) -> list[SafeString]:
    return _render(_topbar, request)


def account_sections(request) -> list[SafeString]:
    return _render(_account, request)
