#!/usr/bin/env python3
"""A tiny HTTP service that says who it is, for the lab and the Vagrant rig.

Usage: name-http.py NAME BIND PORT
  GET /health -> 200 "ok"       (what the gateways' health checks ask)
  GET /       -> 200 "NAME"     (so a client can SEE which host answered)
Used for the CRM servers (port 8080) and for the responder each gateway runs on port 80,
which answers on the VIP while that gateway holds it. It must never do anything else.
"""
import http.server
import sys


def main():
    name, bind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    body = {"/health": b"ok\n"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            data = body.get(self.path, (name + "\n").encode())
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_HEAD(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer((bind, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
