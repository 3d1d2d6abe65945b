"""A TCP proxy for fault injection: ``listen port -> target host:port``, on asyncio.

``cut()`` aborts every live connection and, until ``restore()``, refuses new ones (accepted, then
reset at once) or, with ``mode="blackhole"``, holds them open and never answers (reads are
discarded), as a dead network path does. Put it in front of the embedded broker *and advertise it*
(``EmbeddedBroker(advertised=proxy.address)``): Kafka clients reconnect to the address the broker
advertises, so only then does cutting the proxy cut every client's broker connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = ["CutMode", "ProxyStats", "TcpProxy"]

log = logging.getLogger(__name__)
CutMode = Literal["refuse", "blackhole"]
_CHUNK = 65_536


@dataclass(slots=True)
class ProxyStats:
    accepted: int = 0
    """Connections accepted and forwarded to the target."""
    refused: int = 0
    """Connections reset or black-holed while cut, or whose target could not be reached."""
    aborted: int = 0
    """Live connections aborted by ``cut()``."""
    cuts: int = 0


class _Link:
    """One client connection and its upstream, piped both ways."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter | None) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a graceful FIN: what a broken path looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """``async with TcpProxy(target_port=...) as proxy: proxy.address``."""

    def __init__(
        self,
        *,
        target_port: int,
        target_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._cut: CutMode | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    @property
    def live_connections(self) -> int:
        return len(self._links)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("proxy %s -> %s:%s", self.address, *self.target)
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._abort_all()
        for writer in list(self._held):
            _reset(writer)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        await self._server.wait_closed()
        self._server = None

    def cut(self, mode: CutMode = "refuse") -> int:
        """Abort every live connection; refuse (or black-hole) new ones until ``restore()``.
        Returns the number of connections aborted."""
        self._cut = mode
        self.stats.cuts += 1
        aborted = len(self._links)
        self.stats.aborted += aborted
        self._abort_all()
        log.info("proxy %s cut (%s): %d connections aborted", self.address, mode, aborted)
        return aborted

    def restore(self) -> None:
        """Forward new connections again; black-holed ones are reset so their clients reconnect."""
        self._cut = None
        for writer in list(self._held):
            _reset(writer)
        self._held.clear()
        log.info("proxy %s restored", self.address)

    def _abort_all(self) -> None:
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        if self._cut is not None:
            self.stats.refused += 1
            if self._cut == "refuse":
                _reset(writer)
                return
            self._held.add(writer)
            try:
                with contextlib.suppress(OSError):
                    while await reader.read(_CHUNK):  # swallow requests, answer nothing
                        pass
            finally:
                self._held.discard(writer)
                writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            _reset(writer)
            return
        if self._cut is not None:  # cut while connecting
            self.stats.refused += 1
            _reset(up_writer)
            _reset(writer)
            return
        self.stats.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            for task in link.tasks:
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            for side in (writer, up_writer):
                side.transport.abort()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
