"""The thinnest Python relay: an aiohttp server that copies each request to the next hop and
the answer's bytes back, with no parsing of bodies, SSE or JSON. It is the floor for a relay
written in Python, not a product: no auth, no limits, no queue.

``python -m bench.thinrelay --port 8101 --upstream http://127.0.0.1:8001`` (one hop); chain
two of them (client → relay1 → relay2 → LLM) for the shape of broker + connector.
Runs on uvloop when it is installed, as the services do by default.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web

#: Hop-by-hop headers (RFC 9110 §7.6.1) and the ones aiohttp sets itself for each hop.
_SKIP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
     "proxy-connection", "host", "content-length"}
)  # fmt: skip
_CHUNK = 256 * 1024


def _headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """End-to-end headers as they came, repeated ones (Set-Cookie) included."""
    return [(k, v) for k, v in headers.items() if k.lower() not in _SKIP]


def make_app(upstream: str) -> web.Application:
    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        app["session"] = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
        )
        yield
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(
            request.method,
            upstream + request.rel_url.raw_path_qs,
            headers=_headers(request.headers),
            data=request.content.iter_any() if request.body_exists else None,
        ) as answer:
            response = web.StreamResponse(status=answer.status, headers=_headers(answer.headers))
            if answer.content_length is not None:
                response.content_length = answer.content_length
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application(client_max_size=0)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="next hop, e.g. http://127.0.0.1:8001")
    args = ap.parse_args()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(
        make_app(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
