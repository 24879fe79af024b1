"""Real HTTP servers on loopback for the Hub tests: a file server (pinned downloads) and a minimal model
hub that speaks the four routes ``HfApi.create_repo`` + ``create_commit`` use for small files (repo
creation, README YAML validation, preupload modes, the ndjson commit), storing what was committed."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server:
    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class FileServer(_Server):
    """GET /<name> answers ``files[name]`` (bytes); counts requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests += 1
                data = outer.files.get(self.path.lstrip("/"))
                _reply(
                    self,
                    200 if data is not None else 404,
                    data if data is not None else b"not found",
                    "application/octet-stream",
                )

        super().__init__(Handler)


class LocalHub(_Server):
    """Repositories in memory: ``repos[repo_id] = {'private', 'files': {path: bytes}, 'commits': [message]}``;
    ``auth`` records each request's Authorization header."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.auth.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo_id = f"{req['organization']}/{req['name']}"
                    outer.repos.setdefault(
                        repo_id, {"private": req.get("visibility") == "private", "files": {}, "commits": []}
                    )
                    return _reply(self, 200, json.dumps({"url": f"{outer.url}/{repo_id}"}).encode())
                if path == "/api/validate-yaml":
                    return _reply(self, 200, b"{}")
                route = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/main", path)
                if not route or route[1] not in outer.repos:
                    return _reply(self, 404, json.dumps({"error": f"no route {path}"}).encode())
                repo = outer.repos[route[1]]
                if route[2] == "preupload":  # every file inline (regular git blobs): no LFS/Xet round trip
                    files = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in json.loads(body)["files"]
                    ]
                    return _reply(self, 200, json.dumps({"files": files}).encode())
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        repo["commits"].append(item["value"]["summary"])
                    elif item["key"] == "file":
                        repo["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                oid = f"{len(repo['commits']):040x}"
                return _reply(
                    self,
                    200,
                    json.dumps({"commitOid": oid, "commitUrl": f"{outer.url}/{route[1]}/commit/{oid}"}).encode(),
                )

        super().__init__(Handler)
