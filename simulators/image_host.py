"""A web server of images on loopback: what a user's image URLs point at, for the tests,
the demo and the benchmarks of editq's inputs by reference.

Every image is made from its path, so none has to be stored: `/img/<name>.png` (or
`.jpg`, `.webp`) is a small image whose colours come from `<name>` (different names,
different bytes), `?w=&h=` set its size, `?orientation=6` gives a JPEG an EXIF
orientation. Besides images it serves what a hostile or broken URL serves: a redirect
(`/redirect?to=URL`), HTML labelled as a PNG (`/html-as-png`), an HTML page (`/page`),
any status (`/status/<code>`), and `/big?mb=N` (N MB labelled as a PNG). `/_sim/stats`
counts the requests by path.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter

from aiohttp import web
from aiohttp.typedefs import Handler
from PIL import Image

_TYPES = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"),
          "webp": ("WEBP", "image/webp")}


def image(name: str, extension: str, width: int = 64, height: int = 48,
          orientation: int | None = None) -> bytes:
    """The image `/img/<name>.<extension>` serves (the tests compute it to compare)."""
    fmt, _ = _TYPES[extension]
    digest = hashlib.sha256(name.encode()).digest()
    img = Image.new("RGB", (width, height), tuple(digest[:3]))
    img.paste(tuple(digest[3:6]), (0, 0, max(1, width // 4), max(1, height // 4)))
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, fmt, exif=exif)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def make_app() -> web.Application:
    asked: Counter[str] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        asked[request.path] += 1
        return await handler(request)

    async def img(request: web.Request) -> web.Response:
        name, _, extension = request.match_info["file"].rpartition(".")
        if extension not in _TYPES or not name:
            raise web.HTTPNotFound()
        query = request.query
        orientation = int(query["orientation"]) if "orientation" in query else None
        data = image(name, extension, int(query.get("w", 64)), int(query.get("h", 48)),
                     orientation)
        return web.Response(body=data, content_type=_TYPES[extension][1])

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def html_as_png(request: web.Request) -> web.Response:
        return web.Response(body=b"<html><body>not an image</body></html>",
                            content_type="image/png")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>a page</body></html>", content_type="text/html")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="as asked")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"\0" * (int(request.query.get("mb", "1")) << 20),
                            content_type="image/png")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": sum(asked.values()), "paths": dict(asked)})

    app = web.Application(middlewares=[count])
    app.add_routes([web.get("/img/{file}", img), web.get("/redirect", redirect),
                    web.get("/html-as-png", html_as_png), web.get("/page", page),
                    web.get("/status/{code}", status), web.get("/big", big),
                    web.get("/_sim/stats", stats)])
    return app


def run(host: str, port: int) -> None:
    web.run_app(make_app(), host=host, port=port, print=None)
