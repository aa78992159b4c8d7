"""The update agent (`provisioner node update ...`, update-engine.service): check the channel, apply.

    check   read update.conf, fetch and verify the channel's signed manifest, compare versions
    apply   check, then download + verify the payload to ROOT, write the passive slot
            (slot_writer.py), set the marker for locksmithd and the state UPDATED_NEED_REBOOT
    status  channel, booted and passive slot with their versions, last check, state, failed versions

A version older than the booted one is refused (one line naming both); a version that fell back
before is skipped; `SERVER=disabled` (or no SERVER) does nothing. Every run first settles an update
pending from before the last reboot (state.after_boot). Like update_engine's Omaha request, the check
tells the server what this node runs: the manifest URL carries `?booted=<version>&slot=<A|B>&state=
<status>&failed=<versions>`, which `provisioner serve` records in the machine's state (pxe/update_checks.py).
"""

from __future__ import annotations

import logging
import shutil
import time
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from provisioner.errors import ProvisionerError
from provisioner.node.kernel_cmdline import read_kernel_cmdline
from provisioner.node.slots import Slot, booted_partuuid, find_slot_disk, slot_by_partuuid, slot_partitions
from provisioner.node.update import payload, slot_writer
from provisioner.node.update import state as st
from provisioner.node.update.config import UpdateConfig, read_config
from provisioner.node.update.manifest import Manifest, parse_manifest
from provisioner.node.update.strategy import key_value
from provisioner.node.update.version import is_newer, refuse_downgrade

log = logging.getLogger("provisioner.node.update")

VERSION_TXT = Path("/usr/share/provisioner/version.txt")


class UpdateError(ProvisionerError):
    """The agent cannot update this machine (live boot, no server, ...)."""


@dataclass(frozen=True)
class CheckResult:
    config: UpdateConfig
    booted_version: str
    manifest: Manifest | None
    update: bool          # manifest names a version to apply
    message: str


def booted_version(path: Path = VERSION_TXT) -> str:
    try:
        values = key_value(path.read_text())
    except OSError as exc:
        raise UpdateError(f"{path}: cannot read the booted version ({exc.strerror})") from None
    version = values.get("PROVISIONER_VERSION")
    if not version:
        raise UpdateError(f"{path}: PROVISIONER_VERSION: missing")
    return version


def check_query(booted: str, slot: Slot | None, state: st.UpdateState) -> dict[str, str]:
    """What the check tells the server about this node (pure)."""
    query = {"booted": booted, "slot": slot.label if slot else "live", "state": state.status}
    if state.failed:
        query["failed"] = ",".join(state.failed[-8:])
    return query


def booted_slot() -> Slot | None:
    partuuid = booted_partuuid(read_kernel_cmdline())
    return slot_by_partuuid(partuuid) if partuuid else None


class UpdateAgent:
    def __init__(self, store: st.StateStore | None = None, key_path: Path = payload.RELEASE_KEY):
        self.store = store or st.StateStore()
        self.key_path = key_path

    # -- state --------------------------------------------------------------------------------------

    def settled_state(self) -> st.UpdateState:
        """The saved state with a pending update from an earlier boot settled (and saved)."""
        state = self.store.load()
        slot = booted_slot()
        new, note = st.after_boot(state, slot.key if slot else None, st.boot_id())
        if note is not None:
            log.warning("update: %s", note)
            self.store.save(new)
        return new

    def _save(self, state: st.UpdateState, **changes) -> st.UpdateState:
        state = replace(state, **changes)
        self.store.save(state)
        return state

    # -- check --------------------------------------------------------------------------------------

    def fetch_manifest(self, config: UpdateConfig, facts: dict[str, str] | None = None) -> Manifest:
        """The channel's manifest, verified; `facts` go along as the query (check_query)."""
        url = config.manifest_url()
        query = f"?{urllib.parse.urlencode(facts)}" if facts and url.startswith(("http:", "https:")) else ""
        data = payload.fetch_small(url + query)
        signature = payload.fetch_small(url + ".sig")
        payload.verify_signed(data, signature, payload.read_release_key(self.key_path),
                              self.store.directory, f"{url}")
        manifest = parse_manifest(data, url)
        if manifest.channel != config.group:
            raise UpdateError(f"{url}: channel {manifest.channel!r}, but this machine follows {config.group!r}")
        return manifest

    def check(self) -> CheckResult:
        """Raises VersionError for a downgrade, DownloadError/VerifyError/ManifestError for a bad channel."""
        with self.store.locked():
            return self._check()

    def _check(self) -> CheckResult:
        config = read_config()
        state = self.settled_state()
        booted = booted_version()
        if config.disabled:
            message = f"updates are off (SERVER={config.server or 'not set'} in update.conf)"
            self._save(state, message=message)
            return CheckResult(config, booted, None, False, message)
        waiting = self.store.need_reboot()
        if waiting is not None:
            message = f"{waiting} is installed and waits for a reboot"
            return CheckResult(config, booted, None, False, message)
        facts = check_query(booted, booted_slot(), state)
        state = self._save(state, status=st.CHECKING)
        try:
            manifest = self.fetch_manifest(config, facts)
            offered = manifest.version
            refuse_downgrade(offered, booted)
        except ProvisionerError as exc:
            self._save(state, status=st.IDLE, last_checked=time.time(), message=str(exc))
            raise
        if offered in state.failed:
            update, message = False, f"{offered} fell back before on this machine: not tried again"
        elif is_newer(offered, booted):
            update, message = True, f"{offered} is available (booted {booted}, channel {config.group})"
        else:
            update, message = False, f"{booted} is the channel's current version (channel {config.group})"
        self._save(state, status=st.AVAILABLE if update else st.IDLE, last_checked=time.time(),
                   available=offered, message=message)
        return CheckResult(config, booted, manifest, update, message)

    # -- apply --------------------------------------------------------------------------------------

    def apply(self) -> CheckResult:
        """check(), then install the offered version into the passive slot when it is newer."""
        with self.store.locked():
            return self._apply()

    def _apply(self) -> CheckResult:
        result = self._check()
        if not result.update or result.manifest is None:
            return result
        slot = booted_slot()
        if slot is None:
            raise UpdateError("not booted from a USR slot (a live or PXE system): nothing to update")
        target = slot_writer.other_slot(slot)
        disk, table = find_slot_disk(slot.partuuid)
        if not slot_partitions(table)[slot.key].boot.successful:
            # The other slot is this boot's fallback until this one is marked: never overwrite it now.
            message = f"{slot.label} is not marked successful yet: {result.manifest.version} waits"
            self._save(self.store.load(), message=message)
            return replace(result, update=False, message=message)
        manifest = result.manifest
        state = self.store.load()
        work = self.store.directory / "download" / manifest.version
        try:
            state = self._save(state, status=st.DOWNLOADING, message=f"downloading {manifest.version}")
            files = self._download(result.config, manifest, work)
            state = self._save(state, status=st.FINALIZING, message=f"writing {manifest.version} to {target.label}")
            slot_writer.write_update(disk, target, files["usr"], manifest.files["usr"],
                                     files["kernel"], files["initrd"])
        except ProvisionerError as exc:
            self._save(state, status=st.ERROR, message=f"update to {manifest.version} failed: {exc}")
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        versions = {**state.slot_versions, slot.key: result.booted_version, target.key: manifest.version}
        message = f"{manifest.version} written to {target.label}: reboot to use it"
        self._save(state, status=st.NEED_REBOOT, message=message, slot_versions=versions,
                   pending=st.Pending(manifest.version, target.key, st.boot_id()))
        self.store.mark_need_reboot(manifest.version)
        return replace(result, message=message)

    def _download(self, config: UpdateConfig, manifest: Manifest, work: Path) -> dict[str, Path]:
        key = payload.read_release_key(self.key_path)
        files = {}
        for part, expected in manifest.files.items():
            url = manifest.file_url(config.server, part)
            signature = payload.fetch_small(url + ".sig")
            log.info("update: downloading %s (%d bytes)", url, expected.size)
            files[part] = payload.download_verified(url, expected, signature, key, work / expected.name)
        return files

    # -- status -------------------------------------------------------------------------------------

    def status(self) -> dict:
        config = read_config()
        state = self.settled_state()
        slot = booted_slot()
        booted = booted_version()
        doc: dict = {"channel": config.group, "server": config.server or None,
                     "reboot_strategy": config.reboot_strategy,
                     "booted": {"slot": slot.label if slot else None, "version": booted},
                     "passive": None, "state": state.status, "last_checked": state.last_checked,
                     "available": state.available, "message": state.message,
                     "failed_versions": list(state.failed), "need_reboot": self.store.need_reboot()}
        if doc["need_reboot"]:
            doc["state"] = st.NEED_REBOOT
        if slot is not None:
            passive = slot_writer.other_slot(slot)
            doc["passive"] = {"slot": passive.label, "version": state.slot_versions.get(passive.key)}
            try:
                _disk, table = find_slot_disk(slot.partuuid)
                doc["slots"] = {key: {"priority": p.boot.priority, "tries": p.boot.tries,
                                      "successful": p.boot.successful}
                                for key, p in sorted(slot_partitions(table).items())}
            except ProvisionerError as exc:
                doc["slots"] = str(exc)
        return doc



def status_lines(doc: dict) -> list[str]:
    booted, passive = doc["booted"], doc["passive"] or {}
    checked = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["last_checked"]))
               if doc["last_checked"] else "never")
    lines = [f"CHANNEL={doc['channel']}", f"SERVER={doc['server'] or ''}",
             f"BOOTED_SLOT={booted['slot'] or 'none (live)'}", f"BOOTED_VERSION={booted['version']}",
             f"PASSIVE_SLOT={passive.get('slot') or ''}", f"PASSIVE_VERSION={passive.get('version') or ''}",
             f"LAST_CHECKED={checked}", f"CURRENT_OP=UPDATE_STATUS_{doc['state']}",
             f"NEW_VERSION={doc['need_reboot'] or doc['available'] or ''}",
             f"FAILED_VERSIONS={','.join(doc['failed_versions'])}"]
    if doc["message"]:
        lines.append(f"MESSAGE={doc['message']}")
    return lines

