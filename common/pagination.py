"""The one way a page lists many things: ``paginate`` and the partial ``console/partials/pagination.html``.

A view::

    page = paginate(request, queryset)              # PAGE_SIZE a page, ?page=N
    return render(request, "app/list.html", {"page": page})

and its template::

    {% include "console/partials/pagination.html" %}

The partial's links keep every query parameter of the request (the filters, the search) but the page number
and HTMX's ``partial``, so paging a filtered list stays filtered. A list that polls asks for the page it shows
again with ``page.query`` (those parameters and this page's number)::

    <div hx-get="{% url 'app:list' %}?partial=table&amp;{{ page.query }}" hx-trigger="every 2s" ...>
"""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.http import HttpRequest, QueryDict

PAGE_SIZE = 20
DROPPED = ("partial",)  # a polled fragment's own parameter: a link from it opens the whole page


def paginate(
    request: HttpRequest | None, items, *, per_page: int = PAGE_SIZE, param: str = "page", anchor: str = ""
) -> Page:
    """The requested page of ``items``, with what the partial needs to link to the others.

    ``param`` names the page's query parameter (a page with two lists gives each its own) and ``anchor`` is
    the fragment the links end with (``"#errors"``).
    """
    query = request.GET if request is not None else QueryDict()
    page = Paginator(items, per_page).get_page(query.get(param))
    kept = query.copy()
    for name in (param, *DROPPED):
        kept.pop(name, None)
    encoded = kept.urlencode()
    page.param = param  # type: ignore[attr-defined]
    page.kept_query = f"{encoded}&" if encoded else ""  # type: ignore[attr-defined]
    page.query = f"{page.kept_query}{param}={page.number}"  # type: ignore[attr-defined]
    page.anchor = anchor  # type: ignore[attr-defined]
    return page
