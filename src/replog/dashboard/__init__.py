"""The live dashboard every node serves at GET /: one static page and its assets, shipped in the package.

The page is plain HTML, CSS and JavaScript with no build step and nothing fetched from elsewhere: it
reads the node's own JSON endpoints (/health, /messages long-polls, POST /messages) from the browser.
The node only hands out these files; it keeps no state for the page.
"""

from __future__ import annotations

import functools
import importlib.resources

from aiohttp import web

# The assets under /ui/ and their media types; any other name is a JSON 404 (there is no directory listing).
ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

# The page only talks to the node that served it: a strict policy costs nothing and stops injected
# script or styles from anywhere else.
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


@functools.cache
def asset_bytes(name: str) -> bytes:
    """One file of the dashboard as shipped inside the package."""
    return importlib.resources.files(__name__).joinpath(name).read_bytes()


async def index(request: web.Request) -> web.Response:
    """GET /: the dashboard page."""
    return web.Response(body=asset_bytes("index.html"), content_type="text/html", charset="utf-8", headers=_HEADERS)


async def asset(request: web.Request) -> web.Response:
    """GET /ui/{name}: a script, style sheet or icon of the page; an unknown name is a JSON 404."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    kind = ASSETS[name]
    charset = "utf-8" if kind.startswith("text/") else None
    return web.Response(body=asset_bytes(name), content_type=kind, charset=charset, headers=_HEADERS)


def add_dashboard_routes(app: web.Application) -> None:
    """Serve the dashboard at GET / and its assets at GET /ui/{name}, on a master or a secondary."""
    app.router.add_get("/", index)
    app.router.add_get("/ui/{name}", asset)
