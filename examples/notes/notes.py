"""A tiny notes API (Python standard library only): the example of an app that is not the demo.

    GET  /health         liveness: 200 "ok"
    GET  /               {"app": "notes", "title": NOTES_TITLE, "notes": <count>}
    GET  /notes/<key>    the note, or 404
    PUT  /notes/<key>    store the body (at most 4 KiB); needs "Authorization: Bearer <token>"

Settings: NOTES_PORT (8000), NOTES_TITLE (a plain variable), NOTES_TOKEN_FILE (a secret file:
the token writes need). Notes live in memory: the image keeps a read-only root.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_NOTE = 4096
_notes: dict[str, str] = {}
_lock = threading.Lock()


def read_token(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


class Handler(BaseHTTPRequestHandler):
    server_version = "notes/1"
    title = os.environ.get("NOTES_TITLE", "notes")
    token = read_token(os.environ["NOTES_TOKEN_FILE"]) if os.environ.get("NOTES_TOKEN_FILE") else ""

    def reply(self, status: int, body: object) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def key(self) -> str | None:
        prefix = "/notes/"
        if not self.path.startswith(prefix) or len(self.path) == len(prefix) or len(self.path) > 200:
            return None
        return self.path[len(prefix) :]

    def do_GET(self) -> None:
        if self.path == "/health":
            self.reply(200, "ok")
        elif self.path == "/":
            with _lock:
                count = len(_notes)
            self.reply(200, {"app": "notes", "title": self.title, "notes": count})
        elif (key := self.key()) is not None:
            with _lock:
                note = _notes.get(key)
            if note is None:
                self.reply(404, "no such note")
            else:
                self.reply(200, {"key": key, "note": note})
        else:
            self.reply(404, "not found")

    def do_PUT(self) -> None:
        key = self.key()
        given = self.headers.get("Authorization", "")
        if not self.token or not hmac.compare_digest(given, f"Bearer {self.token}"):
            self.reply(401, "a valid bearer token is needed")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if key is None or length > MAX_NOTE:
            self.reply(400, f"PUT /notes/<key> with at most {MAX_NOTE} bytes")
            return
        note = self.rfile.read(length).decode("utf-8", "replace")
        with _lock:
            _notes[key] = note
        self.reply(200, {"key": key, "stored": len(note)})

    def log_message(self, format: str, *args: object) -> None:
        print(json.dumps({"client": self.client_address[0], "request": format % args}), flush=True)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("NOTES_PORT", "8000"))), Handler)
    server.daemon_threads = True
    server.serve_forever()
