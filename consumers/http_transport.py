"""A lean HTTP/1.1 keep-alive transport for httpx: asyncio streams and h11, no connection-pool walks.

httpcore's pool re-examines every connection (each time reading its socket's peer address
through anyio to see whether it expired) whenever a request is queued or finishes. For a
worker that keeps dozens of small requests in flight to a few hosts, that bookkeeping costs
more than the request itself. This transport keeps, per origin, a stack of idle connections:
a request takes one (or opens one), writes, reads the whole response, and puts it back.
It speaks plain HTTP/1.1 (no TLS, no HTTP/2, no proxies): what the gateways and providers on
the private network are reached with. Errors are httpx's own exceptions, so callers classify
them as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import h11
import httpx

_READ_CHUNK = 65536


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))

    def close(self) -> None:
        self.writer.close()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"KeepAliveTransport speaks plain http, not {request.url.scheme}")
        timeouts = request.extensions.get("timeout", {})
        origin = (request.url.host, request.url.port or 80)
        async with self._slots:
            reused = self._take_idle(origin)
            if reused is not None:
                try:
                    return await self._send(origin, reused, request, timeouts.get("read"))
                except httpx.RemoteProtocolError:
                    pass  # the server closed the idle connection: once more, on a new one
            connection = await self._open(origin, timeouts.get("connect"), request)
            return await self._send(origin, connection, request, timeouts.get("read"))

    async def _send(self, origin: tuple[str, int], connection: _Connection, request: httpx.Request,
                    timeout: float | None) -> httpx.Response:
        try:
            response = await asyncio.wait_for(self._exchange(connection, request), timeout)
        except TimeoutError:
            connection.close()
            raise httpx.ReadTimeout("no response in time", request=request) from None
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError, RuntimeError) as exc:
            # RuntimeError: uvloop's "unable to perform operation on <TCPTransport closed=True>;
            # the handler is closed", writing to a connection its peer (a crashed gateway)
            # closed just now. A transport error like the others, so it is retried (once at
            # once when the connection was an idle one), never a worker's internal error.
            connection.close()
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from None
        except BaseException:
            connection.close()
            raise
        self._put_back(origin, connection)
        return response

    def _take_idle(self, origin: tuple[str, int]) -> _Connection | None:
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        return None

    async def _open(self, origin: tuple[str, int], timeout: float | None,
                    request: httpx.Request) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*origin), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {origin[0]}:{origin[1]} timed out",
                                       request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"{exc.strerror or exc}", request=request) from None
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: httpx.Request) -> httpx.Response:
        protocol = connection.protocol
        body = await request.aread()
        head = h11.Request(method=request.method, target=request.url.raw_path,
                           headers=request.headers.raw)
        data = protocol.send(head) + (protocol.send(h11.Data(data=body)) if body else b"")
        connection.writer.write(data + protocol.send(h11.EndOfMessage()))
        await connection.writer.drain()
        status, response_headers, chunks = 0, [], []
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                data = await connection.reader.read(_READ_CHUNK)
                protocol.receive_data(data)  # b"" marks the end of the stream
                continue
            if isinstance(event, h11.Response):
                status, response_headers = event.status_code, event.headers
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise asyncio.IncompleteReadError(b"", None)
        return httpx.Response(status, headers=list(response_headers), content=b"".join(chunks),
                              request=request)

    def _put_back(self, origin: tuple[str, int], connection: _Connection) -> None:
        protocol = connection.protocol
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
                with contextlib.suppress(OSError):
                    await connection.writer.wait_closed()
        self._idle.clear()
