"""Stopping background tasks reliably on Python 3.11.

On 3.11, ``asyncio.wait_for`` (used inside aiomqtt) can swallow a cancellation that arrives
just as the awaited future completes, and a ``TaskGroup`` whose child fails while it is being
cancelled can drop the ``CancelledError``. A single ``task.cancel()`` may therefore be lost;
:func:`cancel_and_wait` repeats it until the task has really ended.
"""

from __future__ import annotations

import asyncio

#: How long to wait for a cancelled task before cancelling it again.
_RETRY_S = 0.2


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` (again and again if a cancellation gets lost) until it is done."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RETRY_S)
