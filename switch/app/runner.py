"""The event loop every airswitch process runs on, and how it is told to stop or reload."""

from __future__ import annotations

import asyncio
import signal


def run(coroutine) -> object:
    """Run on uvloop where it is installed (Linux, macOS), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


async def wait_for_signal(on_reload=None) -> None:
    """Until SIGINT or SIGTERM; SIGHUP calls `on_reload` (a coroutine function) when given."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task] = set()
    if on_reload is not None:
        def reload() -> None:
            task = loop.create_task(on_reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
