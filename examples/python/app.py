#!/usr/bin/python3
"""A plain Python web app (standard library only), unchanged for cohort.

It keeps its sessions in memory under its own cookie SESSIONID, counts
requests per session and answers a health check. cohort runs it with
  --app-command '/usr/bin/python3 app.py' --app-session-cookie SESSIONID
and tells it where to listen in PORT (see README.md).
"""
import http.cookies
import json
import os
import secrets
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NODE = os.environ.get("COHORT_NODE_ID", "standalone")
PORT = int(os.environ.get("PORT", "9000"))
SESSIONS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request on stdout: cohort logs it
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()

    def reply(self, code, body, cookie=None):
        data = json.dumps(body).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", "SESSIONID=%s; Path=/; HttpOnly" % cookie)
        self.end_headers()
        self.wfile.write(data)

    def session(self):
        jar = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        sid = jar["SESSIONID"].value if "SESSIONID" in jar else None
        with LOCK:
            if sid in SESSIONS:
                return sid, SESSIONS[sid], None
            sid = secrets.token_urlsafe(24)
            SESSIONS[sid] = {"count": 0}
            return sid, SESSIONS[sid], sid

    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"ok": True})
        if self.path == "/counter":
            sid, s, new = self.session()
            return self.reply(200, {"count": s["count"], "node": NODE}, new)
        if self.path == "/headers":
            return self.reply(200, {"node": NODE, "headers": dict(self.headers)})
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path == "/counter":
            sid, s, new = self.session()
            with LOCK:
                s["count"] += 1
            return self.reply(200, {"count": s["count"], "node": NODE}, new)
        self.reply(404, {"error": "not found"})


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    print("listening on 127.0.0.1:%d as node %s" % (PORT, NODE), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
