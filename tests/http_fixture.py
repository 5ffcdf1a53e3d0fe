"""A real HTTP server on 127.0.0.1 that serves files with Range support and scripted faults."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        # consumed one per request: "500"; "cut" (half the body, then the connection drops);
        # "chunked-cut" (a chunked body that stops before its last chunk); "429:S" / "503:S"
        # (that status with Retry-After: S seconds)
        self.faults: list[str] = []
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.times: list[float] = []  # time.monotonic() of each request
        self.pause_s = 0.0  # a pause after every 64 KiB of a body: a slow link
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                server.times.append(time.monotonic())
                fault = server.faults.pop(0) if server.faults else None
                body = server.files.get(self.path)
                if fault == "500":
                    self.send_error(500, "scripted failure")
                    return
                if fault and fault.split(":")[0] in ("429", "503"):
                    code, seconds = fault.split(":")
                    self.send_response(int(code))
                    self.send_header("Retry-After", seconds)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body):
                    self.send_error(416)
                    return
                chunk = body[start:]
                if fault == "chunked-cut":  # whole chunks for half the body, then no final chunk
                    self.protocol_version = "HTTP/1.1"
                    self.send_response(206 if rng else 200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(chunk) // 2, 65536):
                        piece = chunk[i : min(i + 65536, len(chunk) // 2)]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(chunk)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if fault == "cut":  # half the bytes, then the connection drops
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for i in range(0, len(chunk), 65536):
                    self.wfile.write(chunk[i : i + 65536])
                    if server.pause_s:
                        self.wfile.flush()
                        time.sleep(server.pause_s)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
