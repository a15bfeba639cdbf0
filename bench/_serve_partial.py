"""A diagnostic `serve` without some of its components, to see what costs what.

    python bench/_serve_partial.py CONFIG --without=pipeline --without=sender

The same prepare() and components() as `conduct-gateway serve`, minus the named ones
(component names: ban-cache, list-relay, sender, pipeline, scheduler, smtp). Not a way to run the
gateway: without the pipeline, stored mail is never processed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import config, logs
from gateway.daemon import components, prepare
from gateway.settings_holder import SettingsHolder


async def serve(path: Path, without: set[str]) -> None:
    settings = config.load(path)
    logs.configure(settings.log_level, settings.log_format)
    database, found = await asyncio.to_thread(prepare, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    running = []
    try:
        for component in components(SettingsHolder(settings), database, found):
            if component.name in without:
                continue
            await component.start()
            running.append(component)
        names = ",".join(c.name for c in running)
        logs.event(logs.get("bench"), logging.WARNING, "ready", components=names)
        await stop.wait()
    finally:
        for component in reversed(running):
            await component.stop()
        database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--without", action="append", default=[])
    args = parser.parse_args()
    asyncio.run(serve(args.config, set(args.without)))


if __name__ == "__main__":
    main()
