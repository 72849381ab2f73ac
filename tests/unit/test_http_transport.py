"""The lean keep-alive transport: reuse, a server-closed idle connection, and httpx's errors."""

import asyncio
import json

import httpx
import pytest

from herald.consumers.http_transport import KeepAliveTransport


class Server:
    """A tiny HTTP/1.1 server on loopback that records what it saw."""

    def __init__(self, *, close_after: int = 0, delay_s: float = 0.0, connection_close: bool = False):
        self.connections = 0
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self.close_after, self.delay_s, self.connection_close = close_after, delay_s, connection_close

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.serve(reader, writer)
        finally:
            writer.close()  # also when the client gave up and the loop is ending

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            request_line, *lines = head.decode().split("\r\n")
            headers = {k.strip().lower().encode(): v.strip().encode()
                       for k, v in (line.split(":", 1) for line in lines if ":" in line)}
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            self.requests.append((request_line.encode(), headers, body))
            await asyncio.sleep(self.delay_s)
            payload = json.dumps({"echo": body.decode()}).encode()
            extra = b"Connection: close\r\n" if self.connection_close else b""
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Seen: yes\r\n" + extra
                         + b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            await writer.drain()
            served += 1
            if self.connection_close or (self.close_after and served >= self.close_after):
                break


def exchange(server: Server, calls, timeout: float = 5.0):
    async def go():
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(transport=KeepAliveTransport(4), timeout=timeout) as client:
            try:
                return await calls(client, f"http://127.0.0.1:{port}")
            finally:
                listener.close()
                await listener.wait_closed()
    return asyncio.run(go())


def test_requests_reuse_one_connection_and_carry_body_and_headers():
    server = Server()

    async def calls(client, url):
        return [await client.post(f"{url}/v1/emails", json={"n": n}, headers={"Idempotency-Key": f"k-{n}"})
                for n in range(5)]

    responses = exchange(server, calls)
    assert [r.status_code for r in responses] == [201] * 5
    assert responses[0].json() == {"echo": '{"n":0}'} and responses[0].headers["x-seen"] == "yes"
    assert server.connections == 1
    line, headers, _body = server.requests[4]
    assert line == b"POST /v1/emails HTTP/1.1" and headers[b"idempotency-key"] == b"k-4"


def test_an_idle_connection_the_server_closed_is_replaced_without_an_error():
    server = Server(close_after=1)

    async def calls(client, url):
        first = await client.get(f"{url}/sessions/s-1")
        await asyncio.sleep(0.05)  # the server has closed it meanwhile
        return first, await client.get(f"{url}/sessions/s-1")

    first, second = exchange(server, calls)
    assert (first.status_code, second.status_code) == (201, 201)
    assert server.connections == 2


def test_connection_close_is_honoured():
    server = Server(connection_close=True)

    async def calls(client, url):
        return [await client.get(url) for _ in range(3)]

    assert [r.status_code for r in exchange(server, calls)] == [201] * 3
    assert server.connections == 3


def test_a_slow_answer_is_a_read_timeout():
    async def calls(client, url):
        return await client.get(url)

    with pytest.raises(httpx.ReadTimeout):
        exchange(Server(delay_s=1.0), calls, timeout=0.2)


def test_a_refused_connection_is_a_connect_error():
    async def go():
        async with httpx.AsyncClient(transport=KeepAliveTransport(2), timeout=2) as client:
            await client.get("http://127.0.0.1:9/")  # discard port: nothing listens
    with pytest.raises(httpx.ConnectError):
        asyncio.run(go())


def test_https_is_refused_clearly():
    async def go():
        async with httpx.AsyncClient(transport=KeepAliveTransport(2)) as client:
            await client.get("https://example.test/")
    with pytest.raises(httpx.UnsupportedProtocol, match="plain http"):
        asyncio.run(go())


def test_writing_to_a_connection_closed_under_it_is_a_transport_error_and_retried_on_a_new_one():
    """uvloop raises RuntimeError ("the handler is closed") where asyncio raises OSError."""
    server = Server()

    async def calls(client, url):
        transport = client._transport
        first = await client.get(url)
        (idle,) = next(iter(transport._idle.values()))

        def closed_under_us(_data):
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; "
                               "the handler is closed")
        idle.writer.write = closed_under_us
        return first, await client.get(url)

    first, second = exchange(server, calls)
    assert (first.status_code, second.status_code) == (201, 201)
    assert server.connections == 2
