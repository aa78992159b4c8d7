"""`provisioner rescue HOST`: install to a server booted into its provider's rescue system, over SSH.

Parses options, opens the session, calls provisioner.remote.rescue, prints the result (data on stdout,
progress and logs on stderr). The installer's own options (-C -V -b -B -o -f -c -k and any other)
pass through unchanged, except that `-i` is the SSH identity here (as in ssh) and an Ignition file is
given as --ignition. Local files (-c, --ignition, -k, and -f with --push) are uploaded first.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import typer

from provisioner.cli.output import confirm, emit, emit_json
from provisioner.core.sizes import parse_size
from provisioner.errors import UsageError
from provisioner.remote.hostkeys import DEFAULT_KNOWN_HOSTS, HostKeyPolicy, normalize_pin
from provisioner.remote.inspect import AUTO_MIN_SIZE
from provisioner.remote.progress import ProgressBar
from provisioner.remote.rescue import REMOTE_DIR, RescueReport, RescueRequest, inspect_host, rescue_install
from provisioner.remote.session import Auth, Session
from provisioner.remote.target import load_ssh_config, resolve

HELP = """Install to HOST's disk while it runs a rescue system, over SSH.

  provisioner rescue root@203.0.113.10 --disk /dev/sda -C stable -b http://mirror/stable -c node1.yaml
  provisioner rescue kimsufi-1 --disk auto --push -f image.bin.zst --reboot
  provisioner rescue root@host --inspect

A password is read from $PROVISIONER_SSH_PASSWORD or asked for, never taken from the command line.
"""


def _confirmation(yes: bool) -> Callable[[str], bool] | None:
    """What rescue_install asks before erasing the disk (it names the disk and the host): nothing with --yes."""
    if yes:
        return None

    def ask(question: str) -> bool:
        confirm(question, yes=False, refusal=f"{question.rstrip('?')}: refusing without --yes (no terminal to ask)")
        return True

    return ask


def _print_report(report: RescueReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
        return
    parts = report.verify.get("partitions", [])
    files = ", ".join(f"{k} ok" for k in report.verify.get("files", {})) or "no files sent"
    emit(f"installed {report.disk} on {report.host}: GPT ok ({len(parts)} partitions), {files}; "
         f"{sum(report.seconds.values()):.1f} s" + ("; rebooting" if report.rebooted else ""))


def rescue(
    ctx: typer.Context,
    host: str = typer.Argument(..., help="[user@]host[:port] or an alias from ~/.ssh/config (user defaults to root)."),
    port: int | None = typer.Option(None, "--port", "-p", help="SSH port (default: ssh config, else 22)."),
    identity: list[Path] = typer.Option([], "--identity", "-i", help="SSH private key file (repeatable)."),
    host_key: str | None = typer.Option(None, "--host-key", help="Trust only this host key: SHA256:... "
                                           "(rescue systems make new keys every boot)."),
    accept_new: bool = typer.Option(False, "--accept-new", help="Trust an unknown host key on first use and "
                                    "record it in known_hosts (a changed key is still refused)."),
    known_hosts: str = typer.Option(DEFAULT_KNOWN_HOSTS, "--known-hosts", help="known_hosts file."),
    ssh_config: str | None = typer.Option(None, "--ssh-config", "-F", help="ssh config file "
                                             "(default ~/.ssh/config)."),
    disk: str | None = typer.Option(None, "--disk", "-d", help="Target disk on the host, or 'auto' (smallest "
                                       "unused disk over --min-size, like flatcar-install -s)."),
    inspect: bool = typer.Option(False, "--inspect", help="Show disks, holders, memory, python3; change nothing."),
    push: bool = typer.Option(False, "--push", help="Stream the local -f image over SSH (host cannot reach "
                              "the image server)."),
    reboot: bool = typer.Option(False, "--reboot", help="Reboot the host after a verified install."),
    stop_raid: bool = typer.Option(False, "--stop-raid", help="Stop auto-assembled md RAID / LVM on the disk."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before erasing the disk."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    min_size: str = typer.Option(str(AUTO_MIN_SIZE), "--min-size", help="--disk auto: smallest size to "
                                 "consider (bytes or 10G style; default 10,000,000,000 as flatcar-install)."),
    auto_types: str = typer.Option("disk", "--auto-types", help="--disk auto: lsblk TYPEs to consider "
                                   "(comma list; 'disk,loop' in labs)."),
    channel: str | None = typer.Option(None, "-C", help="Installer: release channel."),
    version: str | None = typer.Option(None, "-V", help="Installer: version (default current)."),
    base_url: str | None = typer.Option(None, "-b", help="Installer: base URL of the release directory."),
    board: str | None = typer.Option(None, "-B", help="Installer: board."),
    oem: str | None = typer.Option(None, "-o", help="Installer: OEM id."),
    image: str | None = typer.Option(None, "-f", help="Installer: image file (a path on the host; a local "
                                        "path with --push)."),
    cloud_config: Path | None = typer.Option(None, "-c", help="Local cloud-config file (uploaded, 0600)."),
    ignition: Path | None = typer.Option(None, "--ignition", help="Local Ignition file (uploaded, 0600)."),
    keyfile: Path | None = typer.Option(None, "-k", help="Local release public key (uploaded)."),
    zipapp: Path | None = typer.Option(None, "--zipapp", help="Use this installer zipapp instead of building one."),
    remote_dir: str = typer.Option(REMOTE_DIR, "--remote-dir", hidden=True),
    reboot_command: str = typer.Option("reboot", "--reboot-command", hidden=True),
) -> None:
    policy = HostKeyPolicy(known_hosts=known_hosts, pin=normalize_pin(host_key) if host_key else None,
                           accept_new=accept_new)
    if host_key and accept_new:
        raise UsageError("--host-key and --accept-new exclude each other")
    passthrough: list[str] = []
    for flag, value in (("-C", channel), ("-V", version), ("-b", base_url), ("-B", board), ("-o", oem)):
        if value is not None:
            passthrough += [flag, value]
    if image is not None and not push:
        passthrough += ["-f", image]
    passthrough += list(ctx.args)
    request = RescueRequest(
        disk=disk or "auto", installer_args=tuple(passthrough),
        image=Path(image) if (image and push) else None, cloud_config=cloud_config, ignition=ignition,
        keyfile=keyfile, push=push, stop_raid=stop_raid, reboot=reboot,
        reboot_command=tuple(reboot_command.split()), min_size=parse_size(min_size),
        auto_types=tuple(t.strip() for t in auto_types.split(",") if t.strip()), remote_dir=remote_dir,
        zipapp=zipapp,
    )
    if not inspect and disk is None:
        raise UsageError("give --disk DEV (or --disk auto), or --inspect")
    # paramiko logs the failures we turn into one-line RemoteErrors (with tracebacks, from its threads);
    # show its own log only with --debug.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    target = resolve(host, config=load_ssh_config(ssh_config), port=port,
                     identities=tuple(str(p) for p in identity))
    with Session(target, policy, Auth()) as session:
        if inspect:
            facts, text = inspect_host(session, request)
            if as_json:
                emit_json(dataclasses.asdict(facts))
            else:
                emit(text)
            return
        bar = ProgressBar()
        try:
            report = rescue_install(session, request, on_event=bar, confirm=_confirmation(yes))
        finally:
            bar.close()
    _print_report(report, as_json)


def register(app: typer.Typer) -> None:
    app.command(
        "rescue", help=HELP,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(rescue)
