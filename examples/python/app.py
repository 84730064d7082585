#!/usr/bin/python3
"""A plain Python web app (standard library only), unchanged for cohort.

It keeps its sessions under its own cookie SESSIONID, counts requests per
session, takes uploads (POST /upload, multipart field "file"; GET /files/NAME)
and answers a health check. cohort runs it with
  --app-command '/usr/bin/python3 app.py' --app-session-cookie SESSIONID
and tells it where to listen in PORT (see README.md). Sessions live in memory
(sticky only: lost with the node), or, when cohort serves the Redis protocol
(--redis-addr, handed over in COHORT_REDIS_ADDR) and Debian's python3-redis
is installed, in cohort's replicated store, where they survive the node.
Uploads go to the shared directory cohort mounts (--files-mount, handed over
in COHORT_FILES_DIR), else to uploads-NODE beside this file.
"""
import http.cookies
import json
import os
import re
import secrets
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

NODE = os.environ.get("COHORT_NODE_ID", "standalone")
PORT = int(os.environ.get("PORT", "9000"))
SESSION_TTL = 24 * 3600  # seconds a stored session lives after its last write
FILES = os.environ.get("COHORT_FILES_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "uploads-" + NODE)
MAX_UPLOAD = 64 << 20  # bytes of one upload request


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


def multipart_file(content_type, body):
    """The (file name, bytes) of the part named "file" of a multipart/form-data
    body, or None."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or not m:
        return None
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        disp = next((line for line in head.decode("utf-8", "replace").split("\r\n")
                     if line.lower().startswith("content-disposition:")), "")
        name = re.search(r'[; ]name="([^"]*)"', disp)
        filename = re.search(r'filename="([^"]*)"', disp)
        if sep and name and name.group(1) == "file" and filename:
            return filename.group(1), data[:-2] if data.endswith(b"\r\n") else data
    return None


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
        if self.path.startswith("/files/"):
            return self.download(os.path.basename(unquote(self.path[len("/files/"):])))
        self.reply(404, {"error": "not found"})

    def download(self, name):
        try:
            with open(os.path.join(FILES, name), "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            return self.reply(404, {"error": "no such file"})
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def upload(self, body):
        f = multipart_file(self.headers.get("Content-Type", ""), body)
        name = os.path.basename(f[0]) if f else ""
        if not name or name.startswith("."):
            return self.reply(400, {"error": 'send a multipart field "file" with a file name'})
        # Written to a temp file, then renamed over the name: a reader on any
        # node sees the old file or the whole new one (close-to-open).
        os.makedirs(FILES, exist_ok=True)
        tmp = os.path.join(FILES, ".upload-" + secrets.token_hex(8))
        with open(tmp, "wb") as out:
            out.write(f[1])
        os.replace(tmp, os.path.join(FILES, name))
        self.reply(200, {"name": name, "size": len(f[1]), "node": NODE})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_UPLOAD:
            self.close_connection = True
            return self.reply(413, {"error": "request body over %d bytes" % MAX_UPLOAD})
        body = self.rfile.read(n) if n else b""
        if self.path == "/upload":
            return self.upload(body)
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
