"""The kernel command-line hook of the live (PXE) image (provisioner-hook.service).

    provisioner.install="-d /dev/sda -b http://10.0.0.1:8080/stable"   run the installer unattended
    provisioner.run="/usr/bin/some-command arg"                          run any command
    provisioner.after=reboot|poweroff|none                               then (default: none)
    provisioner.report="http://10.0.0.1:8080/report?mac=52-54-00-00-00-01"  POST the installer's progress
    provisioner.boot_secret=0f1e...                                       this boot's proof (the server adds it)
    provisioner.servers=http://10.0.0.2:8080,http://10.0.0.3:8080       the site's other boot servers (the
                                                                          server adds it, with --state-etcd)

`provisioner.install=` runs `python3 -m provisioner.install ARGS --yes --progress json`, adding
`-k /usr/share/provisioner/release-key.asc` (the key of the build that made this image) unless
ARGS name a key. Values with spaces are quoted on the kernel command line ("...", kernel_cmdline.py
reads them back as the kernel does); ARGS and the provisioner.run command are then split into
words as a shell would (shlex), so an argument with spaces inside them takes single quotes.

With `provisioner.report=`, every JSON progress line of the installer (install/progress.py) is
also POSTed to that URL (the boot server's `/report`, provisioner/pxe/reports.py): lifecycle events
always, progress at most every REPORT_INTERVAL s and when it reaches 100 %. A server that does not
answer never stops the install: after MAX_REPORT_FAILURES failed posts the hook stops reporting.
An installer that dies without an `error` event gets one posted for it. Once the installer has
succeeded, the hook POSTs `/installed` with the same query (`installed_url`): the server then boots
the machine from its disk (provisioner/pxe/installed.py).

Several servers, one state (`provisioner serve --state-etcd`, docs/pxe.md): `provisioner.servers=` names
the site's other live servers. A POST that gets no answer (or a 5xx) from the server that answered last
goes to the same path and query at the others in order, and the hook stays with the one that took it;
the installer gets each of them as a `--mirror` of its `-b` URL, when that URL is under the reporting
server's base URL (install/source.py asks them when a server gives no answer, the cloud-config URL
included, and resumes a broken image download there).

Every POST carries the boot's secret from `provisioner.boot_secret=` as `Authorization: Bearer
<secret>`: the server refuses writes without it (provisioner/pxe/boot_secrets.py). A header rather
than the query string keeps it out of URLs, which end up in logs and on the console.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

from provisioner.core.commands import run
from provisioner.core.entry import run_main
from provisioner.errors import UsageError
from provisioner.install.progress import EventKind, ProgressEvent, parse_progress_line
from provisioner.install.source import is_url
from provisioner.node.kernel_cmdline import KernelCmdline, read_kernel_cmdline

PROG = "provisioner-hook"
RELEASE_KEY = "/usr/share/provisioner/release-key.asc"
SERVERS_PARAMETER = "provisioner.servers"
AFTER = {"reboot": ["systemctl", "reboot"], "poweroff": ["systemctl", "poweroff"], "none": None}
REPORT_INTERVAL = 2.0
REPORT_TIMEOUT = 5.0
MAX_REPORT_FAILURES = 3
INSTALLED_ATTEMPTS = 3      # the mark decides the next boot: worth a retry, 2 s apart
SECRET_PARAMETER = "provisioner.boot_secret"


def _words(cmdline: KernelCmdline, name: str) -> list[str]:
    """The value of `name` split as a shell would; raises UsageError naming the parameter."""
    try:
        return shlex.split(cmdline.get(name) or "")
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def site_servers(cmdline: KernelCmdline) -> list[str]:
    """The other servers' base URLs from provisioner.servers= (pure); raises UsageError for one that is
    not an http(s) URL."""
    servers = [word.strip().rstrip("/") for word in (cmdline.get(SERVERS_PARAMETER) or "").split(",")]
    for server in servers:
        if server and not is_url(server):
            raise UsageError(f"{SERVERS_PARAMETER}: {server!r} is not an http(s) URL")
    return [server for server in servers if server]


def server_base(report_url: str) -> str | None:
    """The base URL of the server a /report URL belongs to (pure): http://s:8080/report?mac=x -> http://s:8080;
    None for another path."""
    parts = urllib.parse.urlsplit(report_url)
    if not parts.path.endswith("/report"):
        return None
    return urllib.parse.urlunsplit(parts._replace(path=parts.path[: -len("/report")], query="", fragment=""))


def _option_value(args: list[str], names: tuple[str, ...]) -> str | None:
    """The value of the first of `names` in an argument list, as `-b URL` or `--base-url=URL` (pure)."""
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def install_mirrors(args: list[str], cmdline: KernelCmdline) -> list[str]:
    """`--mirror URL` arguments for the installer: its -b URL under each other server (pure), when -b is under
    the reporting server's base URL and the arguments name no mirror of their own."""
    base = server_base(cmdline.get("provisioner.report") or "")
    release = _option_value(args, ("-b", "--base-url"))
    if (base is None or release is None or _option_value(args, ("--mirror",)) is not None
            or not release.startswith(base + "/")):
        return []
    return [word for server in site_servers(cmdline) if server != base
            for word in ("--mirror", server + release[len(base):])]


def hook_commands(cmdline: KernelCmdline,
                  release_key: str | None = RELEASE_KEY) -> tuple[list[list[str]], list[str] | None]:
    """(commands to run in order, command to run afterwards or None) for a kernel command line (pure).

    Raises UsageError for an unknown provisioner.after value or an unbalanced quote."""
    commands = []
    if cmdline.has("provisioner.install"):
        args = _words(cmdline, "provisioner.install")
        if release_key and "-k" not in args:
            args += ["-k", release_key]
        if "--yes" not in args:
            args.append("--yes")
        if "--progress" not in args:
            args += ["--progress", "json"]
        args += install_mirrors(args, cmdline)
        commands.append([sys.executable or "python3", "-m", "provisioner.install", *args])
    if cmdline.get("provisioner.run"):
        commands.append(_words(cmdline, "provisioner.run"))
    after = cmdline.get("provisioner.after") or "none"
    if after not in AFTER:
        raise UsageError(f"provisioner.after={after!r} is not one of {', '.join(AFTER)}")
    return commands, AFTER[after]


def installed_url(report_url: str) -> str | None:
    """The server's /installed URL beside its /report URL, same query (pure); None for another path."""
    parts = urllib.parse.urlsplit(report_url)
    if not parts.path.endswith("/report"):
        return None
    return urllib.parse.urlunsplit(parts._replace(path=parts.path[: -len("report")] + "installed"))


class Reporter:
    """POSTs installer progress lines to the boot server's /report URL, or to the other servers of its site
    when it does not answer (see the module docstring)."""

    def __init__(self, url: str, secret: str | None = None, clock: Callable[[], float] = time.monotonic,
                 servers: Sequence[str] = ()):
        self.url = url
        self.secret = secret
        self.clock = clock
        base = server_base(url)
        # Base URLs to try, the one that answered last first; the report URL's own alone without a base.
        self.bases = [base, *(server for server in servers if server != base)] if base else []
        self.current = 0
        self.failures = 0
        self.last_progress = float("-inf")
        self.sent_error = False

    def line(self, text: str) -> None:
        """Report one output line of the installer if it is a progress event worth sending."""
        event = parse_progress_line(text)
        if event is None:
            return
        if event.kind is EventKind.PROGRESS:
            if self.clock() - self.last_progress < REPORT_INTERVAL and event.percent != 100:
                return
            self.last_progress = self.clock()
        self.sent_error = self.sent_error or event.kind is EventKind.ERROR
        self.post(event)

    def _send(self, url: str, body: bytes) -> str | None:
        """POST `body` with the boot secret to `url` (a URL of the report's server) at the server that answered
        last, then at the others in order; None when one took it, else why not. An answer that refuses (4xx) is
        final: the servers share one state, so another would refuse it too."""
        base = self.bases[0] if self.bases else None
        if base is None or not url.startswith(base + "/"):
            return self._post_once(url, body)[0]
        rest = url[len(base):]
        failed: str | None = None
        for turn in range(len(self.bases)):
            index = (self.current + turn) % len(self.bases)
            target = self.bases[index] + rest
            failed, final = self._post_once(target, body)
            if final:
                if failed is None and index != self.current:
                    print(f"{PROG}: {target} answered: reporting there from now on", flush=True)
                    self.current = index
                return failed
            if len(self.bases) > 1:
                print(f"{PROG}: {target} failed: {failed}", flush=True)
        return failed

    def _post_once(self, url: str, body: bytes) -> tuple[str | None, bool]:
        """(None when the server took it, else why not; whether another server could do better)."""
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers["Authorization"] = f"Bearer {self.secret}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST", headers=headers),
                                        timeout=REPORT_TIMEOUT) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            return str(exc), exc.code < 500
        except (OSError, ValueError) as exc:
            return str(exc), False
        return None, True

    def post(self, event: ProgressEvent) -> None:
        if self.failures >= MAX_REPORT_FAILURES:
            return
        # Only what the server reads (pxe/reports.py): the `done` line's summary can be long.
        failed = self._send(self.url, json.dumps(event.to_dict(details=False)).encode())
        if failed is not None:
            self.failures += 1
            print(f"{PROG}: report to {self.url} failed ({self.failures}/{MAX_REPORT_FAILURES}): {failed}",
                  flush=True)

    def installed(self, pause: float = 2.0) -> bool:
        """Tell the server the install succeeded (POST /installed); False when it never took it."""
        url = installed_url(self.url)
        if url is None:
            print(f"{PROG}: {self.url} is not a /report URL: cannot tell the server the install is done", flush=True)
            return False
        for attempt in range(1, INSTALLED_ATTEMPTS + 1):
            failed = self._send(url, b"")
            if failed is None:
                return True
            print(f"{PROG}: {url} failed ({attempt}/{INSTALLED_ATTEMPTS}): {failed}", flush=True)
            if attempt < INSTALLED_ATTEMPTS:
                time.sleep(pause)
        return False


def run_streaming(argv: list[str], reporter: Reporter | None) -> int:
    """Run argv with its output on our stdout (the console, StandardOutput=journal+console), each
    line also handed to the reporter; returns the exit code (127 when it cannot start)."""
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as exc:
        print(f"{PROG}: error: cannot run {argv[0]}: {exc.strerror}", flush=True)
        return 127
    assert process.stdout is not None
    for text in process.stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
        if reporter is not None:
            reporter.line(text)
    return process.wait()


def run_hook() -> int:
    """Run the commands the kernel command line asks for; the exit code of the first that fails, else 0.

    Raises UsageError for a malformed provisioner.* parameter."""
    cmdline = read_kernel_cmdline()
    commands, after = hook_commands(cmdline)
    url = cmdline.get("provisioner.report")
    reporter = Reporter(url, cmdline.get(SECRET_PARAMETER), servers=site_servers(cmdline)) if url else None
    for index, argv in enumerate(commands):
        print(f"{PROG}: running {shlex.join(argv)}", flush=True)
        code = run_streaming(argv, reporter)
        print(f"{PROG}: exit {code}: {shlex.join(argv)}", flush=True)
        if code != 0:
            if reporter is not None and not reporter.sent_error:
                failed = f"exit {code}: {shlex.join(argv)[:120]}"
                reporter.post(ProgressEvent(EventKind.ERROR, "hook", message=failed))
            return code
        if index == 0 and cmdline.has("provisioner.install") and reporter is not None:
            reporter.installed()   # hook_commands puts the installer first
    if after:
        run(after, check=False, capture=False)
    return 0


def main() -> int:
    return run_main(PROG, run_hook)


if __name__ == "__main__":
    sys.exit(main())
