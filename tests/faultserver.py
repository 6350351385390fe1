"""A loopback HTTP server that misbehaves on purpose, for the fault-injection tests (tests/test_faults_*.py).

Each path is served by a `Mode`; a route may hold a list of modes, used one per request
(the last one repeats), e.g. ``[Mode("reset", cut=1000), Mode("ok")]``: the first request
is reset after 1000 bytes, every later one succeeds. Written on raw sockets, so that it
can send exactly the broken bytes a real network produces (a chunked stream that stops,
a TCP reset, headers one byte at a time).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field

KINDS = ("ok", "truncate", "chunked", "chunked_break", "reset", "stall", "trickle", "trickle_headers", "silent",
         "wrong_bytes", "no_length", "status")


@dataclass
class Mode:
    """How to answer one request: `kind` (see KINDS), where to cut, how slowly to drip."""

    kind: str = "ok"
    cut: int = 0  # bytes of the body sent before truncate/reset/stall/chunked_break
    delay: float = 0.2  # seconds between the bytes of trickle/trickle_headers
    status: int = 500  # for kind "status"
    honor_range: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown mode {self.kind!r}")


@dataclass
class FaultServer:
    """Serves `routes` (path -> (body, [Mode, ...])) on 127.0.0.1; `log` records (path, Range header) per request."""

    routes: dict[str, tuple[bytes, list[Mode]]] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    server: socketserver.ThreadingTCPServer | None = None

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def serve(self, path: str, body: bytes, *modes: Mode) -> str:
        self.routes[path] = (body, list(modes) or [Mode()])
        return self.url(path)

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.log if p == path]


def _handler(state: FaultServer):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            sock: socket.socket = self.request
            sock.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
            state.log.append((path, headers.get("range")))
            if path not in state.routes:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            body, modes = state.routes[path]
            count = sum(1 for p, _ in state.log if p == path)
            mode = modes[min(count, len(modes)) - 1]
            try:
                self.answer(sock, method, body, mode, headers.get("range"))
            except OSError:
                pass  # the client hung up: fine, that is often the point

        def answer(self, sock, method, body, mode, range_header):
            if mode.kind == "silent":
                state.stop.wait(30)
                return
            if mode.kind == "status":
                sock.sendall(f"HTTP/1.1 {mode.status} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
                return
            if mode.kind == "wrong_bytes":
                body = bytes(b ^ 0x5A for b in body)
            start = 0
            status = "200 OK"
            extra = ""
            if range_header and mode.honor_range and mode.kind not in ("no_length",):
                start = int(range_header.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    sock.sendall(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                status = "206 Partial Content"
                extra = f"Content-Range: bytes {start}-{len(body) - 1}/{len(body)}\r\n"
            rest = body[start:]
            if mode.kind in ("chunked", "chunked_break"):
                head = f"HTTP/1.1 {status}\r\n{extra}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            elif mode.kind == "no_length":
                head = "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n"
            else:
                head = f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(rest)}\r\nConnection: close\r\n\r\n"
            if mode.kind == "trickle_headers":
                for byte in head.encode():
                    if state.stop.wait(mode.delay):
                        return
                    sock.sendall(bytes([byte]))
                sock.sendall(rest)
                return
            sock.sendall(head.encode())
            if method == "HEAD":
                return
            if mode.kind in ("ok", "wrong_bytes", "no_length"):
                sock.sendall(rest)
            elif mode.kind == "chunked":
                for i in range(0, len(rest), 4096):
                    piece = rest[i:i + 4096]
                    sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            elif mode.kind == "chunked_break":
                piece = rest[:mode.cut]
                sock.sendall(f"{len(piece) + 100:x}\r\n".encode() + piece)  # promises 100 more bytes, then stops
            elif mode.kind == "truncate":
                sock.sendall(rest[:mode.cut])
            elif mode.kind == "reset":
                sock.sendall(rest[:mode.cut])
                time.sleep(0.05)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            elif mode.kind == "stall":
                sock.sendall(rest[:mode.cut])
                state.stop.wait(30)
            elif mode.kind == "trickle":
                for i in range(len(rest)):
                    if state.stop.wait(mode.delay):
                        return
                    sock.sendall(rest[i:i + 1])

    return Handler


def start_fault_server() -> FaultServer:
    """Start a FaultServer in daemon threads; call `stop_fault_server` when done."""
    state = FaultServer()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.server = server
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return state


def stop_fault_server(state: FaultServer) -> None:
    state.stop.set()
    state.server.shutdown()
    state.server.server_close()
