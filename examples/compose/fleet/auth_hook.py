#!/usr/bin/env python3
"""A demo auth hook for wsgate's fleet example: it lets everybody in and names the user and
tags the client asked for in its query string (?user=alice&tags=room-1,room-2&ttl=3600).

Never do this for real: a real hook checks a cookie or a token and answers who that is.
The contract (docs/fleet.md): a 2xx answer with X-Wsgate-User, X-Wsgate-Tags and
X-Wsgate-Expires (Unix seconds)."""
import argparse
import http.server
import time
import urllib.parse


class Hook(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        target = urllib.parse.urlsplit(self.headers.get("X-Original-Uri", "/"))
        query = urllib.parse.parse_qs(target.query)
        self.send_response(200)
        if "user" in query:
            self.send_header("X-Wsgate-User", query["user"][0])
        if "tags" in query:
            self.send_header("X-Wsgate-Tags", query["tags"][0])
        if "ttl" in query and query["ttl"][0].isdigit():
            self.send_header("X-Wsgate-Expires", str(int(time.time()) + int(query["ttl"][0])))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer((args.host, args.port), Hook)
    server.request_queue_size = 128
    server.serve_forever()


if __name__ == "__main__":
    main()
