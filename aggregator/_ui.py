"""The status page, ``GET /ui/``: static files shipped in the package (``aggregator/static``).

No build step and nothing from outside: the page, its script and its style sheet are read once
from the package and served with a Content-Security-Policy that lets them talk to this
aggregator only. The page needs no token to load (a browser cannot send one when it follows a
link); the API calls it makes carry the token the user gives it, as any client's would.
Relative URLs throughout, so the page works wherever a gateway mounts the aggregator.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, tuple[bytes, str]]:
    static = resources.files("aggregator") / "static"
    return {name: ((static / name).read_bytes(), kind) for name, kind in _FILES.items()}


def add_ui(app: web.Application) -> tuple[object, ...]:
    """Add ``/ui``, ``/ui/`` and the page's files to ``app``; the handlers that need no token."""
    files = _load()

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        if name not in files:
            raise web.HTTPNotFound()
        body, kind = files[name]
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=_HEADERS)

    async def to_slash(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("ui/")  # relative: right wherever the app is mounted

    app.router.add_get("/ui", to_slash)
    app.router.add_get("/ui/", page)
    app.router.add_get("/ui/{name}", page)
    return (page, to_slash)
