#!/usr/bin/python3
"""A plain Python web app (standard library only), unchanged for cohort.

It keeps its sessions under its own cookie SESSIONID, counts requests per
session and answers a health check. cohort runs it with
  --app-command '/usr/bin/python3 app.py' --app-session-cookie SESSIONID
and tells it where to listen in PORT (see README.md). Sessions live in memory
(sticky only: lost with the node), or, when cohort serves the Redis protocol
(--redis-addr, handed over in COHORT_REDIS_ADDR) and Debian's python3-redis
is installed, in cohort's replicated store, where they survive the node.
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
SESSION_TTL = 24 * 3600  # seconds a stored session lives after its last write


class MemoryStore:
    """Sessions in this process: each a dict with a count."""

    name = "memory"

    def __init__(self):
        self.sessions = {}
        self.lock = threading.Lock()

    def count(self, sid):
        with self.lock:
            s = self.sessions.get(sid)
            return None if s is None else s["count"]

    def create(self, sid):
        with self.lock:
            self.sessions[sid] = {"count": 0}

    def incr(self, sid):
        with self.lock:
            self.sessions[sid]["count"] += 1
            return self.sessions[sid]["count"]


class RedisStore:
    """Sessions in a Redis-protocol store: a hash "session:SID" per session."""

    name = "redis"

    def __init__(self, addr):
        import redis  # Debian's python3-redis

        host, _, port = addr.rpartition(":")
        self.r = redis.Redis(host=host, port=int(port), socket_timeout=15)

    def count(self, sid):
        v = self.r.hget("session:" + sid, "count")
        return None if v is None else int(v)

    def create(self, sid):
        p = self.r.pipeline()  # MULTI/EXEC: one write
        p.hset("session:" + sid, "count", 0)
        p.expire("session:" + sid, SESSION_TTL)
        p.execute()

    def incr(self, sid):
        p = self.r.pipeline()
        p.hincrby("session:" + sid, "count", 1)
        p.expire("session:" + sid, SESSION_TTL)
        return p.execute()[0]


def open_store():
    addr = os.environ.get("COHORT_REDIS_ADDR")
    if addr:
        try:
            return RedisStore(addr)
        except ImportError:
            print("COHORT_REDIS_ADDR is set but python3-redis is missing: sessions in memory", flush=True)
    return MemoryStore()


STORE = open_store()


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
        """The request's session id and count, and the id to set when new."""
        jar = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        sid = jar["SESSIONID"].value if "SESSIONID" in jar else None
        if sid:
            n = STORE.count(sid)
            if n is not None:
                return sid, n, None
        sid = secrets.token_urlsafe(24)
        STORE.create(sid)
        return sid, 0, sid

    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"ok": True})
        if self.path == "/counter":
            sid, n, new = self.session()
            return self.reply(200, {"count": n, "node": NODE, "store": STORE.name}, new)
        if self.path == "/headers":
            return self.reply(200, {"node": NODE, "headers": dict(self.headers)})
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path == "/counter":
            sid, _, new = self.session()
            n = STORE.incr(sid)
            return self.reply(200, {"count": n, "node": NODE, "store": STORE.name}, new)
        self.reply(404, {"error": "not found"})


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    print("listening on 127.0.0.1:%d as node %s" % (PORT, NODE), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
