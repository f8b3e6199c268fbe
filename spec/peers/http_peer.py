#!/usr/bin/env python3
"""A small HTTP server for moonflow's HTTP specs, on 127.0.0.1.

Endpoints: /slow/<ms> (answers after ms), /hang (never answers; counts
clients that gave up), /stats (those counts), /redirect/<n> (302 chain
ending in 200 "landed"), /loop (redirects to itself), /status/<code>,
/echo (method, path, x-test header and body back), /headers (repeated
headers), /close (promises 100 bytes, sends 10 and closes), /big/<n>.
With --tls CERT KEY it speaks HTTPS.  Prints "PORT <n>" when ready."""
import select
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"hang_closed": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = self.path.split("/")
        if parts[1] == "slow":
            time.sleep(int(parts[2]) / 1000)
            self.reply(200, b"slow")
        elif parts[1] == "hang":
            # Never answers; notices when the client gives up.
            self.connection.settimeout(None)
            while True:
                readable, _, _ = select.select([self.connection], [], [], 3600)
                if readable and not self.connection.recv(1024):
                    with lock:
                        stats["hang_closed"] += 1
                    self.close_connection = True
                    return
        elif parts[1] == "stats":
            with lock:
                text = "hang_closed=%d" % stats["hang_closed"]
            self.reply(200, text.encode())
        elif parts[1] == "redirect":
            n = int(parts[2])
            if n == 0:
                self.reply(200, b"landed")
            else:
                self.reply(302, b"", [("Location", "/redirect/%d" % (n - 1))])
        elif parts[1] == "loop":
            self.reply(302, b"", [("Location", "/loop")])
        elif parts[1] == "status":
            self.reply(int(parts[2]), ("status " + parts[2]).encode())
        elif parts[1] == "echo":
            text = "%s %s\n%s\n" % (self.command, self.path,
                                    self.headers.get("X-Test", ""))
            self.reply(200, text.encode() + body)
        elif parts[1] == "headers":
            self.reply(200, b"ok", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                    ("X-Mixed-Case", "Value")])
        elif parts[1] == "close":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
        elif parts[1] == "big":
            self.reply(200, b"x" * int(parts[2]))
        else:
            self.reply(404, b"no such endpoint")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    server = Server(("127.0.0.1", 0), Handler)
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
