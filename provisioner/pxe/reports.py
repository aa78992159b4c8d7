"""Install reports: the live system's installer tells the server how far it got (`POST /report?mac=`).

The live image's hook (provisioner/node/hook.py, kernel argument `provisioner.report=<url>`) posts
each `--progress json` line of `provisioner install` as the request body; install/progress.py defines
the event and its percent (`written`/`mapped` for a bmap install, else `bytes`/`total`).

The server keeps them in the machine state (`provisioner machines`, machines.json) as the stages
`install` (start, verify, and progress in steps of PROGRESS_STEP percent, so a chatty installer
cannot push the boot events out of the bounded history), `install-done` and `install-error`.
A report changes nothing else: a machine is marked installed only by its hook's `POST /installed`
after the installer succeeded (installed.py), so a failed install simply installs again at the next
PXE boot. Each report must carry the boot's secret (writes.py, boot_secrets.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.core.jsondoc import parse_json_object
from provisioner.install.progress import ProgressEvent

MAX_BODY = 4096
PROGRESS_STEP = 10
MAX_MESSAGE = 200


@dataclass(frozen=True)
class InstallReport:
    event: str
    stage: str
    percent: int | None          # None when the report carries no total
    message: str | None = None

    @property
    def machine_stage(self) -> str:
        """The machine-state stage this report is recorded as."""
        return {"done": "install-done", "error": "install-error"}.get(self.event, "install")

    def detail(self) -> dict:
        detail = {"event": self.event, "step": self.stage, "percent": self.percent}
        if self.message:
            detail["message"] = self.message
        return detail


def parse_report(body: bytes) -> InstallReport:
    """One report from a request body (pure); raises ValueError with a one-line reason."""
    try:
        doc = parse_json_object(body, MAX_BODY)
    except ValueError as exc:
        raise ValueError(f"body: {exc}") from None
    event = ProgressEvent.from_dict(doc)
    message = " ".join(event.message.split())[:MAX_MESSAGE] if event.message else None
    return InstallReport(event=event.kind.value, stage=event.stage[:40], percent=event.percent, message=message)


def worth_recording(report: InstallReport, last_percent: int | None) -> bool:
    """Progress reports are recorded when they reach the next PROGRESS_STEP; the rest always (pure)."""
    if report.event != "progress":
        return True
    if report.percent is None:
        return False
    if last_percent is None:
        return True
    return report.percent // PROGRESS_STEP > last_percent // PROGRESS_STEP
