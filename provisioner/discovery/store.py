"""The etcd discovery registry: tokens, their `_config/size` and member keys, with v2-keys semantics.

Only what `etcd --discovery <url>` uses (etcd 3.4 etcdserver/api/v2discovery, reference/runtime.md
§3.1): GET a key or the token directory (members sorted by createdIndex, hidden `_config` left
out), PUT with prevExist=false (create only), GET ?wait=true&waitIndex=N&recursive=true (long-poll
for the next change), DELETE. Every change bumps one global index (X-Etcd-Index, createdIndex,
modifiedIndex). Pure apart from the asyncio.Event that wakes waiters.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import asdict, dataclass, field

EVENT_HISTORY = 1000     # etcd v2 keeps the last 1000 events (errorCode 401 beyond that)
MAX_SIZE = 99

# etcd v2 error codes (etcd/error/error.go)
KEY_NOT_FOUND, TEST_FAILED, NOT_A_FILE, NOT_A_DIR, NODE_EXIST, EVENT_INDEX_CLEARED = 100, 101, 102, 104, 105, 401


class KeysError(Exception):
    """A v2 keys API error: errorCode, message, cause (the key) and the HTTP status to answer with."""

    def __init__(self, code: int, message: str, cause: str, index: int, status: int):
        super().__init__(message)
        self.code, self.message, self.cause, self.index, self.status = code, message, cause, index, status

    def body(self) -> dict:
        return {"errorCode": self.code, "message": self.message, "cause": self.cause, "index": self.index}


@dataclass
class Node:
    key: str
    value: str
    createdIndex: int
    modifiedIndex: int

    def json(self) -> dict:
        return asdict(self)


@dataclass
class Event:
    index: int
    action: str
    node: Node
    prev: Node | None = None


@dataclass
class Token:
    name: str
    leaves: dict[str, Node] = field(default_factory=dict)    # full key -> node
    created: int = 0


class DiscoveryStore:
    """All tokens under one key prefix (e.g. "/discovery")."""

    def __init__(self, prefix: str = "/discovery"):
        self.prefix = prefix.rstrip("/")
        self.tokens: dict[str, Token] = {}
        self.index = 1
        self.events: list[Event] = []
        # Python >= 3.10: an Event binds to a loop only when first awaited, so this is safe here.
        self.changed = asyncio.Event()

    # ------------------------------------------------------------------ tokens

    def new_token(self, size: int) -> str:
        """Create a token whose cluster has `size` members; returns the token. Raises ValueError."""
        if not 1 <= size <= MAX_SIZE:
            raise ValueError(f"size must be between 1 and {MAX_SIZE}, not {size}")
        name = secrets.token_hex(16)
        self.tokens[name] = Token(name, created=self.index)
        self.put(f"{self.prefix}/{name}/_config/size", str(size), prev_exist=None)
        return name

    def _token_of(self, key: str) -> Token:
        rest = key[len(self.prefix) + 1:] if key.startswith(self.prefix + "/") else ""
        name = rest.split("/", 1)[0]
        token = self.tokens.get(name)
        if token is None:
            raise KeysError(KEY_NOT_FOUND, "Key not found", key, self.index, 404)
        return token

    # ------------------------------------------------------------------ keys API

    def get(self, key: str) -> dict:
        """A leaf node, or a directory with its direct children (hidden `_x` children left out)."""
        key = key.rstrip("/")
        token = self._token_of(key)
        if key in token.leaves:
            return {"action": "get", "node": token.leaves[key].json()}
        children: dict[str, dict] = {}
        for leaf_key, node in token.leaves.items():
            if not leaf_key.startswith(key + "/"):
                continue
            child = leaf_key[len(key) + 1:].split("/", 1)[0]
            if child.startswith("_"):
                continue  # v2 hidden node: etcd's discovery relies on _config not being listed
            if "/" in leaf_key[len(key) + 1:]:
                children.setdefault(child, {"key": f"{key}/{child}", "dir": True,
                                            "modifiedIndex": node.modifiedIndex, "createdIndex": node.createdIndex})
            else:
                children[child] = node.json()
        is_token_dir = key == f"{self.prefix}/{token.name}"
        if not children and not is_token_dir and not any(k.startswith(key + "/") for k in token.leaves):
            raise KeysError(KEY_NOT_FOUND, "Key not found", key, self.index, 404)
        nodes = sorted(children.values(), key=lambda n: n["createdIndex"])
        return {"action": "get", "node": {"key": key, "dir": True, "nodes": nodes,
                                          "modifiedIndex": token.created, "createdIndex": token.created}}

    def put(self, key: str, value: str, prev_exist: bool | None) -> tuple[int, dict]:
        """Set a leaf; prev_exist False = create only (412 if present), True = update only."""
        key = key.rstrip("/")
        token = self._token_of(key)
        if key == f"{self.prefix}/{token.name}":
            raise KeysError(NOT_A_FILE, "Not a file", key, self.index, 403)
        existing = token.leaves.get(key)
        if prev_exist is False and existing is not None:
            raise KeysError(NODE_EXIST, "Key already exists", key, self.index, 412)
        if prev_exist is True and existing is None:
            raise KeysError(KEY_NOT_FOUND, "Key not found", key, self.index, 404)
        self.index += 1
        node = Node(key, value, existing.createdIndex if existing else self.index, self.index)
        token.leaves[key] = node
        action = "create" if prev_exist is False else ("update" if existing else "set")
        self._event(Event(self.index, action, node, existing))
        body = {"action": action, "node": node.json()}
        if existing is not None:
            body["prevNode"] = existing.json()
        return (201 if existing is None else 200), body

    def delete(self, key: str) -> dict:
        key = key.rstrip("/")
        token = self._token_of(key)
        existing = token.leaves.pop(key, None)
        if existing is None:
            raise KeysError(KEY_NOT_FOUND, "Key not found", key, self.index, 404)
        self.index += 1
        node = Node(key, "", existing.createdIndex, self.index)
        self._event(Event(self.index, "delete", node, existing))
        return {"action": "delete", "node": {"key": key, "modifiedIndex": self.index,
                                             "createdIndex": existing.createdIndex},
                "prevNode": existing.json()}

    def _event(self, event: Event) -> None:
        self.events.append(event)
        del self.events[:-EVENT_HISTORY]
        self.changed.set()
        self.changed = asyncio.Event()

    def first_event_since(self, key: str, wait_index: int, recursive: bool) -> dict | None:
        """The first change to `key` (or below it, when recursive) with index >= wait_index."""
        key = key.rstrip("/")
        self._token_of(key)
        if self.events and wait_index < self.events[0].index and wait_index <= self.index - EVENT_HISTORY:
            raise KeysError(EVENT_INDEX_CLEARED, "The event in requested index is outdated and cleared",
                            f"the requested history has been cleared [{self.events[0].index}/{wait_index}]",
                            self.index, 400)
        for event in self.events:
            if event.index < wait_index:
                continue
            if event.node.key == key or (recursive and event.node.key.startswith(key + "/")):
                body = {"action": event.action, "node": event.node.json()}
                if event.prev is not None:
                    body["prevNode"] = event.prev.json()
                return body
        return None

    async def wait(self, key: str, wait_index: int, recursive: bool, timeout: float) -> dict | None:
        """Long-poll: the first matching change at or after wait_index, or None after timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = self.first_event_since(key, wait_index, recursive)
            if found is not None:
                return found
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return None

    # ------------------------------------------------------------------ persistence

    def dump(self) -> str:
        return json.dumps({"index": self.index, "tokens": {
            name: {"created": t.created, "leaves": [n.json() for n in t.leaves.values()]}
            for name, t in self.tokens.items()}}, indent=1)

    def restore(self, text: str) -> None:
        """Load a dump(); raises ValueError/KeyError/TypeError on a malformed one."""
        raw = json.loads(text)
        self.index = int(raw["index"])
        self.tokens = {}
        for name, data in raw["tokens"].items():
            token = Token(name, created=int(data["created"]))
            for item in data["leaves"]:
                node = Node(**item)
                token.leaves[node.key] = node
            self.tokens[name] = token

