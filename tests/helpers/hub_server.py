"""A loopback stand-in for the Hugging Face Hub's download protocol, for tests.

It serves model repos from folders on disk with the endpoints, headers and error codes that
``huggingface_hub`` (2.x) relies on, so the real ``snapshot_download`` / ``hf_hub_download``
code runs against it unchanged:

    GET  /api/models/{repo}[/revision/{rev}]    model info: ``sha`` (commit), ``siblings``
    GET  /api/models/{repo}/tree/{rev}          file listing: path, size, git blob ``oid``, ``lfs``
    HEAD /{repo}/resolve/{rev}/{file}           ``X-Repo-Commit``, ``ETag``, ``Content-Length``; for
    GET  /{repo}/resolve/{rev}/{file}           LFS files a 302 to the "CDN" with ``X-Linked-Etag``
                                                (sha256) and ``X-Linked-Size``, as the Hub does
    GET  /cdn/{sha256}                          file bytes, on a second port named ``localhost`` (another
                                                origin, so the client must not send the token there)

Uploads, as ``HfApi`` sends them with ``HF_HUB_DISABLE_XET=1`` (the plain HTTP protocol):

    POST /api/repos/create                      {name, organization, type, visibility, sdk}: 409 if it exists
    POST /api/{kind}/{repo}/branch/{b}          a branch from main (or ``startingPoint``): 409 if it exists
    POST /api/{kind}/{repo}/tag/{rev}  {tag, message}: a tag on that revision (``hf repos tag
                                                create``): 409 if the tag exists
    POST /api/{kind}/{repo}/preupload/{rev}     every file answered ``uploadMode: regular`` with the
                                                ``oid`` (git blob sha1) of the file already at that path,
                                                so the client drops unchanged files and skips a commit
                                                that would change nothing (as with the Hub)
    POST /api/{kind}/{repo}/commit/{rev}        ndjson: header, ``file`` (base64 content),
                                                ``deletedFile``; a new commit on that branch
    POST /api/spaces/{repo}/variables           a Space variable
    POST /api/validate-yaml                     a README.md's front matter, checked as the Hub does

Writes need a token registered with ``add_token(token, write=True)``; a read-only token gets the
Hub's 403. ``{kind}`` is ``models``, ``spaces`` or ``datasets``: Spaces are stored under
``spaces/user/name`` and dataset repos (where the app pushes feedback) under ``datasets/user/name``;
both are read like model repos.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
``GatedRepo``) or the Hub's 401 message for a bad token, which the library maps to its
exceptions: a missing repo is ``RepoNotFound`` on every endpoint, a missing branch, tag or
commit of an existing repo ``RevisionNotFound``, a missing file (``resolve``) or folder
(``tree/{rev}/{path}``) at an existing revision ``EntryNotFound``. Revisions: branches and tags
map to commit hashes; a full hash works too. Where olah (an independent Hub mirror) answers
otherwise, tests/e2e/test_hub_server_strict.py names the difference.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".h5", ".onnx", ".png", ".bin", ".safetensors")
INVALID_TOKEN = "Invalid credentials in Authorization header"
REPO_KINDS = ("models", "spaces", "datasets")  # the /api/{kind}/ of each repo type


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha
    token: str | None = None  # private: only this token may read it
    gated: bool = False
    sdk: str | None = None  # Spaces
    variables: dict[str, str] = field(default_factory=dict)  # Space variables


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    server: str  # "hub" or "cdn"


class FakeHub:
    """Model repos served over HTTP on 127.0.0.1 (random free ports).

    >>> hub = FakeHub()
    >>> sha = hub.add_commit("alice/model", "path/to/folder", branch="main", tags=["v1"])
    >>> with hub:                  # serving at hub.url until the block ends
    ...     snapshot_download("alice/model", endpoint=hub.url)
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}  # "user/name" (models), "spaces/user/name", "datasets/user/name"
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes, for the CDN
        self.requests: list[Request] = []
        self.tokens: dict[str, bool] = {}  # token -> may write
        self.failures: list[tuple[str, str, int, dict]] = []  # (method, path part, status, headers)
        self.forged: list[tuple[str, str, object]] = []  # (method, path part, JSON body): hostile answers
        self.forged_headers: list[tuple[str, dict]] = []  # (path part, headers): hostile headers
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.url = self.cdn_url = ""

    # -- content ---------------------------------------------------------------------------

    def add_commit(self, repo_id: str, folder: str | Path, *, branch: str = "main",
                   tags: tuple[str, ...] | list[str] = ()) -> str:
        """Commit the files under ``folder`` (read now) on ``branch``; return the commit hash."""
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes()
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        repo = self.repos.setdefault(repo_id, Repo())
        digest = hashlib.sha1(repo.refs.get(branch, "").encode())
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + git_blob_sha1(data).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        repo.refs[branch] = sha
        for tag in tags:
            repo.refs[tag] = sha
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        return sha

    def commit_files(self, repo_key: str, files: dict[str, bytes], *, branch: str = "main",
                     deleted: tuple[str, ...] = ()) -> str:
        """A new commit on ``branch``: its parent's files, then ``deleted`` removed and ``files`` set."""
        with self._lock:
            repo = self.repos[repo_key]
            parent = repo.refs.get(branch)
            tree = dict(repo.commits[parent]) if parent else {}
            for name in deleted:
                tree.pop(name, None)
            tree.update(files)
            digest = hashlib.sha1((parent or "").encode())
            for name, data in sorted(tree.items()):
                digest.update(name.encode() + b"\0" + git_blob_sha1(data).encode())
            digest.update(str(len(repo.commits)).encode())  # an identical tree is still a new commit
            sha = digest.hexdigest()
            repo.commits[sha] = tree
            repo.refs[branch] = sha
            for data in tree.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
            return sha

    def files(self, repo_key: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_key]
        return repo.commits[repo.refs.get(revision, revision)]

    def add_token(self, token: str, *, write: bool = False) -> None:
        self.tokens[token] = write

    def fail(self, method: str, path_part: str, status: int, headers: dict | None = None, *,
             times: int = 1) -> None:
        """Answer the next ``times`` requests whose path contains ``path_part`` with ``status``
        (the client retries 429 and 5xx answers: give it more than its retries)."""
        self.failures.extend([(method, path_part, status, headers or {})] * times)

    def forge(self, method: str, path_part: str, body) -> None:
        """Answer every request whose path contains ``path_part`` with ``body`` as JSON (200), as
        a hostile or broken server would (a listing that is not a list, a commit ``../../x``)."""
        self.forged.append((method, path_part, body))

    def forge_headers(self, path_part: str, headers: dict) -> None:
        """Send ``headers`` (replacing the real ones) in every answer to a path containing
        ``path_part``: e.g. an ``ETag`` of ``../../x``."""
        self.forged_headers.append((path_part, headers))

    def set_private(self, repo_id: str, token: str) -> None:
        self.repos[repo_id].token = token

    def set_gated(self, repo_id: str) -> None:
        self.repos[repo_id].gated = True

    def hub_requests(self) -> list[Request]:
        return [r for r in self.requests if r.server == "hub"]

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> "FakeHub":
        for role in ("hub", "cdn"):
            server = _bind(_Handler)
            server.daemon_threads = True
            server.fake = self  # type: ignore[attr-defined]
            server.role = role  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, name=f"fake-{role}", daemon=True).start()
            self._servers.append(server)
        # The CDN is another host name for the client (as the Hub's is), still 127.0.0.1: clients
        # follow redirects within the Hub's host but stop at a CDN's, reading the file's metadata
        # from the redirect itself (huggingface_hub 2.0 compares host names, not ports).
        hub_port, cdn_port = (s.server_address[1] for s in self._servers)
        self.url, self.cdn_url = f"http://127.0.0.1:{hub_port}", f"http://localhost:{cdn_port}"
        return self

    def stop(self) -> None:
        """Stop serving and close the ports: clients now get "connection refused"."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass

    @property
    def fake(self) -> FakeHub:
        return self.server.fake  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        role = self.server.role  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        self.fake.requests.append(Request("POST", path, self.headers.get("Authorization"), role))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self._injected_failure(path):
            return
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            if parts == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body or b"{}"))
            if parts == ["api", "repos", "create"]:
                return self._create_repo(json.loads(body or b"{}"))
            if len(parts) >= 6 and parts[0] == "api" and parts[1] in REPO_KINDS:
                key = _repo_key(parts[1], "/".join(parts[2:4]))
                action, arg = parts[4], "/".join(parts[5:])
                if action == "preupload":
                    return self._preupload(key, arg, json.loads(body or b"{}"))
                if action == "commit":
                    return self._commit_post(key, arg, body)
                if action == "branch":
                    return self._branch(key, arg, json.loads(body or b"{}"))
                if action == "tag":
                    return self._tag(key, arg, json.loads(body or b"{}"))
            if len(parts) == 5 and parts[:2] == ["api", "spaces"] and parts[4] == "variables":
                return self._variable(_repo_key("spaces", "/".join(parts[2:4])), json.loads(body or b"{}"))
            self._error(404, None, "Not Found")
        except BrokenPipeError:
            pass

    def _injected_failure(self, path: str) -> bool:
        with self.fake._lock:
            for i, (method, part, status, headers) in enumerate(self.fake.failures):
                if method == self.command and part in path:
                    del self.fake.failures[i]
                    break
            else:
                return False
        headers = dict(headers)
        self._error(status, headers.pop("X-Error-Code", None), headers.pop("X-Error-Message", f"HTTP {status}"),
                    headers)
        return True

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        role = self.server.role  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        self.fake.requests.append(Request(self.command, path, self.headers.get("Authorization"), role))
        if self._injected_failure(path):
            return
        for method, part, body in self.fake.forged:
            if method == self.command and part in path:
                return self._json(body)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if role == "hub" and parts and parts[0] in ("spaces", "datasets") and len(parts) >= 6 and parts[3] == "resolve":
            parts = [f"{parts[0]}/{parts[1]}"] + parts[2:]  # spaces/user/name/resolve/...: one repo key
        try:
            if role == "cdn":
                return self._cdn(parts, head)
            if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in REPO_KINDS:
                repo_id = _repo_key(parts[1], "/".join(parts[2:4]))
                rest = parts[4:]
                if not rest:
                    return self._model_info(repo_id, "main")
                if rest[0] == "revision" and len(rest) == 2:
                    return self._model_info(repo_id, rest[1])
                if rest[0] == "tree" and len(rest) >= 2:
                    return self._tree(repo_id, rest[1], "/".join(rest[2:]))
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            self._error(404, None, "Not Found")
        except BrokenPipeError:
            pass

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"", *, head: bool = False) -> None:
        for part, forged in self.fake.forged_headers:
            if part in self.path:
                headers = {**headers, **forged}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode(), head=self.command == "HEAD")

    def _json(self, data) -> None:
        self._send(200, {"Content-Type": "application/json"}, json.dumps(data).encode())

    # -- access and revisions --------------------------------------------------------------

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization")
        return auth.removeprefix("Bearer ").strip() if auth else None

    def _writer(self) -> str | None:
        """The token of a request that may write; otherwise answers the Hub's error, returns None."""
        token = self._token()
        if token is None or token not in self.fake.tokens:
            self._error(401, None, INVALID_TOKEN)
            return None
        if not self.fake.tokens[token]:
            self._error(403, None, "You don't have the rights to create or write to this repo: "
                        "your token is read-only")
            return None
        return token

    def _repo(self, repo_id: str) -> Repo | None:
        """The repo if this request may read it; otherwise answers the error and returns None."""
        token = self._token()
        known_tokens = {r.token for r in self.fake.repos.values() if r.token} | set(self.fake.tokens)
        if token is not None and token not in known_tokens:
            self._error(401, None, INVALID_TOKEN)
            return None
        repo = self.fake.repos.get(repo_id)
        if repo is None or (repo.token is not None and token != repo.token):
            # The Hub does not tell a private repo from a missing one.
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated:
            self._error(401 if token is None else 403, "GatedRepo",
                        "Access to this model is restricted: you are not in the authorized list")
            return None
        return repo

    def _commit(self, repo: Repo, revision: str) -> str | None:
        sha = repo.refs.get(revision, revision if revision in repo.commits else None)
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        return sha

    def _repo_at(self, repo_id: str, revision: str):
        """(repo, commit sha), or None once the matching error response has been sent."""
        repo = self._repo(repo_id)
        sha = None if repo is None else self._commit(repo, revision)
        return None if sha is None else (repo, sha)

    # -- endpoints -------------------------------------------------------------------------

    def _create_repo(self, payload: dict) -> None:
        token = self._writer()
        if token is None:
            return
        name = f"{payload.get('organization') or 'user'}/{payload['name']}"
        key = _repo_key(payload.get("type") or "model", name)
        if key in self.fake.repos:  # the Hub's 409 names the repo's URL too (create_repo(exist_ok=True) reads it)
            self._send(409, {"Content-Type": "application/json", "X-Error-Message": "You already created this repo"},
                       json.dumps({"error": "You already created this repo",
                                   "url": f"{self.fake.url}/{key}"}).encode())
            return
        self.fake.repos[key] = Repo(token=token if payload.get("visibility") == "private" else None,
                                    sdk=payload.get("sdk"))
        self.fake.commit_files(key, {".gitattributes": b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"})
        self._json({"url": f"{self.fake.url}/{key}", "name": name})

    def _validate_yaml(self, payload: dict) -> None:
        """What the client asks before committing a README.md: its front matter must be a YAML mapping."""
        import yaml

        text = payload.get("content", "")
        front = text.split("---", 2)[1] if text.startswith("---") and text.count("---") >= 2 else ""
        try:
            data = yaml.safe_load(front) if front.strip() else {}
        except yaml.YAMLError as exc:
            self._send(400, {"Content-Type": "application/json"}, json.dumps({"error": str(exc)}).encode())
            return
        if not isinstance(data, dict):
            self._send(400, {"Content-Type": "application/json"},
                       json.dumps({"error": "metadata must be a mapping"}).encode())
            return
        self._json({"warnings": [] if data else [{"message": "empty or missing yaml metadata"}]})

    def _writable(self, key: str) -> Repo | None:
        if self._writer() is None:
            return None
        return self._repo(key)

    def _branch(self, key: str, branch: str, payload: dict) -> None:
        self._new_ref(key, payload.get("startingPoint") or "main", branch, "heads")

    def _tag(self, key: str, revision: str, payload: dict) -> None:
        self._new_ref(key, revision, payload.get("tag") or "", "tags")

    def _new_ref(self, key: str, revision: str, name: str, kind: str) -> None:
        """A branch (``heads``) or tag (``tags``) named ``name`` at ``revision``: 409 if it exists."""
        repo = self._writable(key)
        if repo is None:
            return
        if name in repo.refs:
            self._error(409, None, f"Reference already exists: refs/{kind}/{name}")
            return
        sha = self._commit(repo, revision)
        if sha is not None:
            repo.refs[name] = sha
            self._json({})

    def _preupload(self, key: str, revision: str, payload: dict) -> None:
        repo = self._writable(key)
        if repo is None:
            return
        sha = self._commit(repo, revision)
        if sha is None:
            return
        tree = repo.commits[sha]
        # ``oid``: the file already at that path (git blob sha1, what the client compares for a
        # regular upload); None for a new file.
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": git_blob_sha1(tree[f["path"]]) if f["path"] in tree else None}
                              for f in payload.get("files", [])], "commitOid": sha})

    def _commit_post(self, key: str, branch: str, body: bytes) -> None:
        repo = self._writable(key)
        if repo is None:
            return
        if branch not in repo.refs:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + branch)
            return
        files, deleted, summary = {}, [], ""
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value.get("summary", "")
            elif item["key"] == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                deleted.append(value["path"])
            else:  # lfsFile (this server announced no LFS uploads), folders, copies
                self._error(400, None, f"unsupported commit operation {item['key']!r}")
                return
        sha = self.fake.commit_files(key, files, branch=branch, deleted=tuple(deleted))
        repo.messages = getattr(repo, "messages", {}) | {sha: summary}
        self._json({"commitUrl": f"{self.fake.url}/{key}/commit/{sha}", "commitOid": sha,
                    "pullRequestUrl": None})

    def _variable(self, key: str, payload: dict) -> None:
        repo = self._writable(key)
        if repo is None:
            return
        repo.variables[payload["key"]] = payload["value"]
        self._json({k: {"value": v, "description": None} for k, v in repo.variables.items()})

    def _model_info(self, repo_id: str, revision: str) -> None:
        found = self._repo_at(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        self._json({
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "sha": sha, "private": repo.token is not None, "gated": False, "disabled": False,
            "tags": [], "siblings": [{"rfilename": name} for name in repo.commits[sha]],
        })

    def _tree(self, repo_id: str, revision: str, folder: str = "") -> None:
        found = self._repo_at(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        files = {name: data for name, data in repo.commits[sha].items() if name.startswith(prefix)}
        if prefix and not files:
            self._error(404, "EntryNotFound", f"{folder} does not exist on {revision!r}", {"X-Repo-Commit": sha})
            return
        entries = []
        for name, data in files.items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
            if name.endswith(LFS_SUFFIXES):
                pointer = lfs_pointer(data)
                entry["oid"] = git_blob_sha1(pointer)
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": len(pointer)}
            entries.append(entry)
        self._json(entries)

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        found = self._repo_at(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        data = repo.commits[sha].get(filename)
        if data is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on {revision!r}",
                        {"X-Repo-Commit": sha})
            return
        if filename.endswith(LFS_SUFFIXES):
            # The Hub answers LFS files with a redirect to its CDN and the file's own metadata.
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = lfs_pointer(data)
            self._send(302, {
                "Location": f"{self.fake.cdn_url}/cdn/{sha256}", "X-Repo-Commit": sha,
                "ETag": f'"{git_blob_sha1(pointer)}"', "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
            }, head=head)
            return
        self._send(200, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(data)}"',
                         "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"},
                   data, head=head)

    def _cdn(self, parts: list[str], head: bool) -> None:
        data = self.fake.blobs.get(parts[-1]) if len(parts) == 2 and parts[0] == "cdn" else None
        if data is None:
            self._send(404, {}, b"no such blob", head=head)
            return
        status, headers = 200, {"ETag": f'"{parts[-1]}"', "Accept-Ranges": "bytes",
                                "Content-Type": "application/octet-stream"}
        start = _range_start(self.headers.get("Range"))
        if start:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data = data[start:]
        self._send(status, headers, data, head=head)


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    first = header.removeprefix("bytes=").split("-", 1)[0]
    return int(first) if first.isdigit() else 0


def _bind(handler) -> ThreadingHTTPServer:
    """A server on a free port (within $SPORTS_CLASSIFIER_TEST_PORTS when set)."""
    from .app_server import free_port

    for _ in range(20):  # another server may take the port between the check and the bind
        try:
            return ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        except OSError:
            continue
    raise RuntimeError("no free port for the Hub test server")


def _repo_key(kind: str, repo_id: str) -> str:
    """Where a repo is kept, which is also its URL path on the Hub: ``user/name`` for models,
    ``spaces/user/name`` for Spaces, ``datasets/user/name`` for datasets."""
    plural = kind if kind.endswith("s") else kind + "s"
    return repo_id if plural == "models" else f"{plural}/{repo_id}"


def use_hub(monkeypatch, url: str, home: Path) -> Path:
    """Point huggingface_hub at ``url`` with ``home`` as HF_HOME, as the environment variables
    HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE do, with Xet off (plain HTTP uploads). huggingface_hub
    reads those once, when it is imported (into ``huggingface_hub.constants``), so for this
    already-imported module the constants are set as well; a fresh process needs only the variables."""
    from huggingface_hub import constants

    cache = home / "hub"
    for key, value in (("HF_ENDPOINT", url), ("HF_HOME", str(home)), ("HF_HUB_CACHE", str(cache)),
                       ("HF_HUB_DISABLE_XET", "1")):
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return cache
