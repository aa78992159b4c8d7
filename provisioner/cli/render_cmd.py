"""`provisioner render ipxe|cloud-config|ignition|generic|metadata`: what a machine would be served."""

from __future__ import annotations

from pathlib import Path

import typer

from provisioner.cli.machine_options import ARCH, DATA_DIR, HOSTNAME, LABEL, MAC, SERIAL, UUID, build_query
from provisioner.cli.output import emit
from provisioner.inventory import load_inventory
from provisioner.render import Renderer

app = typer.Typer(help="Render a machine's iPXE script or configs from the data dir.", no_args_is_help=True)

SERVER_URL = typer.Option("http://127.0.0.1:8080", "--server-url", help="Base URL templates see as server_url.")
REGISTRY_URL = typer.Option(None, "--registry-url", help="http://HOST:PORT templates see as registry_url "
                            "(as `serve --registry-addr` gives them); default: none.")


def _render(kind: str, data_dir, server_url, registry_url, mac, uuid, hostname, serial, arch, label) -> None:
    renderer = Renderer(load_inventory(data_dir), server_url=server_url, registry_url=registry_url)
    query = build_query(mac, uuid, hostname, serial, arch, label)
    method = {"ipxe": renderer.ipxe, "cloud-config": renderer.cloud_config, "ignition": renderer.ignition,
              "generic": renderer.generic, "metadata": renderer.metadata}[kind]
    emit(method(query), newline=False)


def _command(kind: str, doc: str):
    def command(
        data_dir: Path = DATA_DIR, server_url: str = SERVER_URL, registry_url: str = REGISTRY_URL,
        mac: str = MAC, uuid: str = UUID, hostname: str = HOSTNAME, serial: str = SERIAL, arch: str = ARCH,
        label: list[str] = LABEL,
    ) -> None:
        _render(kind, data_dir, server_url, registry_url, mac, uuid, hostname, serial, arch, label)

    command.__doc__ = doc
    return command


for _kind, _doc in (
    ("ipxe", "The machine's iPXE script (kernel, args, initrds)."),
    ("cloud-config", "The machine's cloud-config, rendered and validated."),
    ("ignition", "The machine's Ignition config / Container Linux Config, rendered."),
    ("generic", "The machine's generic template, rendered."),
    ("metadata", "The machine's metadata as KEY=value lines (matchbox /metadata)."),
):
    app.command(_kind)(_command(_kind, _doc))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="render")
