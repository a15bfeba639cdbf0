"""Bare aiosmtpd servers for the baselines, each run in its own process (its own GIL).

    sink   --port P                      answers 250 to every message, keeps nothing
    fsync  --port P --dir D              writes each message to its own file in D and
                                         fsyncs it (in a thread) before answering 250
    relay  --port P --upstream HOST:PORT relays each message to the upstream with
                                         aiosmtplib (one connection per message, like the
                                         gateway) before answering; no checks at all

Prints "ready" once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok"


class FsyncSink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.numbers = itertools.count(1)

    def _write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        number = next(self.numbers)
        data = bytes(envelope.original_content)
        await asyncio.to_thread(self._write, self.directory / f"{number}.eml", data)
        return f"250 2.0.0 Ok: queued as {number}"


class Relay:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            _refused, answer = await aiosmtplib.send(
                bytes(envelope.original_content),
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname=self.host,
                port=self.port,
                start_tls=False,
                timeout=120,
            )
        except aiosmtplib.SMTPResponseException as error:
            return f"{error.code} {error.message}"
        except aiosmtplib.SMTPException:
            return "451 4.4.1 upstream unavailable"
        return f"250 {answer}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["sink", "fsync", "relay"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--upstream")
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler: Any
    if args.mode == "sink":
        handler = Sink()
    elif args.mode == "fsync":
        args.dir.mkdir(parents=True, exist_ok=True)
        handler = FsyncSink(args.dir)
    else:
        host, _, port = args.upstream.rpartition(":")
        handler = Relay(host, int(port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench.example", enable_SMTPUTF8=True),
        host="127.0.0.1",
        port=args.port,
        backlog=200,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
