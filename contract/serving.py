"""Serving an aiohttp application on a host and port, as one async context manager.

Every server of the project (participants, the aggregator, the demo, tests, benchmarks) starts
the same way: ``async with serve_app(app, host, port) as url``. Port 0 picks a free port; the
yielded URL names the one bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, **runner: Any
) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://host:port``).

    ``runner`` goes to :class:`aiohttp.web.AppRunner` (for example ``max_line_size``). Raises
    ``OSError`` when the address cannot be bound.
    """
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner)
    await app_runner.setup()
    try:
        await web.TCPSite(app_runner, host, port).start()
        bound_host, bound_port = app_runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        await app_runner.cleanup()
