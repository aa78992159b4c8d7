"""A scripted machine (or forger) talking HTTP to `provisioner serve`; run in-process or inside a lab namespace.

    python -m tests.integration.pxe.machine_client < requests.json   # [[method, url, headers, body], ...]

prints one JSON list of [status, text] answers (status 0 and the error when the connection failed);
`from_namespace(NS, *requests)` runs it inside a namespace from a test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def http(method: str, url: str, headers: dict[str, str] | None = None, body: str | bytes | None = None,
         timeout: float = 10) -> tuple[int, str]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def boot_secret(script: str) -> str | None:
    """The secret an iPXE script sets (`set boot_secret ...`), or None."""
    found = re.search(r"^set boot_secret (\S+)$", script, re.M)
    return found.group(1) if found else None


def bearer(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def from_namespace(namespace: str, *requests: tuple) -> list[tuple[int, str]]:
    """[method, url, headers, body] requests sent from inside `namespace`; their answers."""
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.integration.pxe.machine_client"],
                          input=json.dumps([list(r) for r in requests]), capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    return [tuple(answer) for answer in json.loads(done.stdout)]


def main() -> None:
    answers = [http(method, url, headers, body) for method, url, headers, body in json.load(sys.stdin)]
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
