"""A local stand-in for the Hugging Face Hub and ModelScope dataset APIs, so download tests never leave 127.0.0.1.

`HubServer(root)` serves every `root/<owner>/<name>/` directory as a dataset repo, in each hub's own URL layout.

Hugging Face, the calls huggingface_hub 1.x makes for `snapshot_download(repo_type="dataset")`:
  GET       /api/datasets/<owner>/<name>/revision/<rev>   repo info: id, sha (the commit), siblings
  GET       /api/datasets/<owner>/<name>/tree/<rev>       recursive listing: type, oid, size, path (+ lfs)
  HEAD|GET  /datasets/<owner>/<name>/resolve/<rev>/<path>
              small files: 200 with ETag (git blob sha1), X-Repo-Commit, Content-Length, Accept-Ranges
              LFS files (parquet): 302 to a CDN host with X-Linked-Etag (sha256) and X-Linked-Size, as the Hub does
  GET       /lfs/<sha256>                                 the LFS object, on the "CDN" host (`localhost`)
  No X-Xet-Hash header and no xetHash in listings: the client takes its plain-HTTP path.

ModelScope, the calls modelscope_hub makes for a dataset snapshot:
  GET /api/v1/datasets/<owner>/<name>/repo/tree?Revision=&PageNumber=&PageSize=   {"Code": 200, "Data": {"Files": []}}
  GET /api/v1/datasets/<owner>/<name>/repo?Revision=&FilePath=                      the file
  GET /api/v1/repos/internalAccelerationInfo                                        404: no intra-cloud route

File bodies honour `Range: bytes=N-` (206 + Content-Range) on both hubs. Faults for tests: `cut_once` holds repo
paths whose first GET stops half-way and drops the connection; `stall` maps a repo path to an Event: its GETs send
half the file and then hang until the event is set. `log` records every request; `fetches(path)` the Range header of
each GET that served a repo file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

HF_BRANCH = "main"
MS_BRANCH = "master"
LFS_SUFFIXES = (".parquet",)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    file: str | None = None  # the repo file whose bytes this request served


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]

    @property
    def commit(self) -> str:
        h = hashlib.sha1()
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + self.files[path])
        return h.hexdigest()

    @staticmethod
    def blob_sha1(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)


@dataclass
class HubServer:
    root: Path
    cut_once: set[str] = field(default_factory=set)
    stall: dict[str, threading.Event] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The Hub sends LFS downloads to another host; `localhost` reaches this server under a different name.
        self.cdn_url = f"http://localhost:{self.port}" if _localhost_is_ipv4_loopback() else self.url
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for event in self.stall.values():
            event.set()
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which only a started server runs
            self._httpd.shutdown()
        self._httpd.server_close()

    def repo(self, owner: str, name: str) -> Repo | None:
        d = self.root / owner / name
        if not d.is_dir():
            return None
        files = {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
        return Repo(f"{owner}/{name}", files)

    def fetches(self, repo_path: str) -> list[str | None]:
        """The Range header of each GET that served `repo_path`'s bytes (resolve, the LFS host or ModelScope)."""
        return [r.range for r in self.log if r.method == "GET" and r.file == repo_path]


def _localhost_is_ipv4_loopback() -> bool:
    try:
        return all(info[4][0] == "127.0.0.1" for info in socket.getaddrinfo("localhost", None, socket.AF_INET))
    except OSError:
        return False


def _handler_for(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        # ------------------------------------------------------------ routing
        def _route(self, head: bool) -> None:
            url = urlsplit(self.path)
            segments = [unquote(s) for s in url.path.split("/")[1:]]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self._request = Request("HEAD" if head else "GET", url.path, self.headers.get("Range"))
            server.log.append(self._request)
            match segments:
                case ["api", "datasets", owner, name, "revision", rev]:
                    self._hf_info(owner, name, rev)
                case ["api", "datasets", owner, name, "tree", rev, *sub]:
                    self._hf_tree(owner, name, rev, "/".join(sub))
                case ["datasets", owner, name, "resolve", rev, *path] if path:
                    self._hf_resolve(owner, name, rev, "/".join(path), head)
                case ["lfs", sha256]:
                    self._lfs(sha256, head)
                case ["api", "v1", "datasets", owner, name, "repo", "tree"]:
                    self._ms_tree(owner, name, query)
                case ["api", "v1", "datasets", owner, name, "repo"]:
                    self._ms_file(owner, name, query, head)
                case _:
                    self._send(404, json.dumps({"error": "not found"}).encode(), {"Content-Type": "application/json"})

        # ------------------------------------------------------------ Hugging Face
        def _hf_repo(self, owner: str, name: str, rev: str) -> Repo | None:
            repo = server.repo(owner, name)
            if repo is None:
                self._hf_error(404, "RepoNotFound", "Repository not found")
                return None
            if rev not in (HF_BRANCH, repo.commit):
                self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return None
            return repo

        def _hf_info(self, owner: str, name: str, rev: str) -> None:
            if (repo := self._hf_repo(owner, name, rev)) is None:
                return
            self._json({
                "_id": repo.commit[:24], "id": repo.repo_id, "author": owner, "sha": repo.commit,
                "lastModified": "2024-01-01T00:00:00.000Z", "private": False, "gated": False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": [], "siblings": [{"rfilename": p} for p in repo.files],
            })

        def _hf_tree(self, owner: str, name: str, rev: str, sub: str) -> None:
            if (repo := self._hf_repo(owner, name, rev)) is None:
                return
            entries, dirs = [], set()
            for path, data in repo.files.items():
                if sub and not path.startswith(sub + "/"):
                    continue
                parts = path.split("/")
                dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
                entry = {"type": "file", "oid": repo.blob_sha1(data), "size": len(data), "path": path}
                if repo.is_lfs(path):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            entries += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                        for d in sorted(dirs)]
            self._json(entries)

        def _hf_resolve(self, owner: str, name: str, rev: str, path: str, head: bool) -> None:
            if (repo := self._hf_repo(owner, name, rev)) is None:
                return
            if path not in repo.files:
                self._hf_error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": repo.commit})
                return
            data = repo.files[path]
            headers = {"X-Repo-Commit": repo.commit}
            if repo.is_lfs(path):
                sha256 = hashlib.sha256(data).hexdigest()
                headers |= {"Location": f"{server.cdn_url}/lfs/{sha256}", "X-Linked-Etag": f'"{sha256}"',
                            "X-Linked-Size": str(len(data)), "ETag": f'"{repo.blob_sha1(data)}"'}
                self._send(302, b"", headers)
                return
            headers["ETag"] = f'"{repo.blob_sha1(data)}"'
            self._body(path, data, head, headers)

        def _lfs(self, sha256: str, head: bool) -> None:
            for repo_dir in server.root.glob("*/*"):
                repo = server.repo(repo_dir.parent.name, repo_dir.name)
                for path, data in (repo.files if repo else {}).items():
                    if hashlib.sha256(data).hexdigest() == sha256:
                        self._body(path, data, head, {"ETag": f'"{sha256}"'})
                        return
            self._send(404, b"no such object", {})

        def _hf_error(self, status: int, code: str, message: str, extra: dict | None = None) -> None:
            self._send(status, json.dumps({"error": message}).encode(),
                       {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message,
                        **(extra or {})})

        # ------------------------------------------------------------ ModelScope
        def _ms_repo(self, owner: str, name: str, query: dict) -> Repo | None:
            repo = server.repo(owner, name)
            rev = query.get("Revision", MS_BRANCH)
            if repo is None or rev != MS_BRANCH:
                what = "dataset" if repo is None else f"revision {rev}"
                self._send(404, json.dumps({"Code": 10010205001, "Message": f"{what} not found", "Success": False})
                           .encode(), {"Content-Type": "application/json"})
                return None
            return repo

        def _ms_tree(self, owner: str, name: str, query: dict) -> None:
            if (repo := self._ms_repo(owner, name, query)) is None:
                return
            files = [{"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": len(d),
                      "Sha256": hashlib.sha256(d).hexdigest(), "Revision": repo.commit}
                     for p, d in repo.files.items()]
            page, size = int(query.get("PageNumber", 1)), int(query.get("PageSize", 100))
            self._json({"Code": 200, "Data": {"Files": files[(page - 1) * size: page * size]}, "Success": True})

        def _ms_file(self, owner: str, name: str, query: dict, head: bool) -> None:
            if (repo := self._ms_repo(owner, name, query)) is None:
                return
            path = query.get("FilePath", "")
            if path not in repo.files:
                self._send(404, json.dumps({"Code": 404, "Message": "file not found"}).encode(), {})
                return
            self._body(path, repo.files[path], head, {})

        # ------------------------------------------------------------ bodies
        def _body(self, path: str, data: bytes, head: bool, headers: dict) -> None:
            self._request.file = path
            start, status = 0, 200
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and not head:
                first, _, last = rng[len("bytes="):].partition("-")
                start = int(first)
                end = int(last) if last else len(data) - 1
                if start >= len(data):
                    self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
                headers = headers | {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
                data, status = data[start:end + 1], 206
            headers = headers | {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            if head:
                self._send(status, data, headers, head=True)
                return
            if path in server.cut_once:
                server.cut_once.discard(path)
                self._send_partial(status, data, headers)
                return
            if path in server.stall:
                self._send_partial(status, data, headers, wait=server.stall[path])
                return
            self._send(status, data, headers)

        def _send_partial(self, status: int, data: bytes, headers: dict, wait: threading.Event | None = None) -> None:
            """Announce the whole body, send half of it, then drop the connection (after `wait`, if given)."""
            self._headers(status, len(data), headers)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if wait is not None:
                wait.wait(timeout=60)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _json(self, payload) -> None:
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

        def _send(self, status: int, body: bytes, headers: dict, head: bool = False) -> None:
            self._headers(status, len(body), headers)
            if not head:
                self.wfile.write(body)

        def _headers(self, status: int, length: int, headers: dict) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()

    return Handler
