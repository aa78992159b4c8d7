"""`provisioner registry import|build|list`: the images the provisioning server's registry holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from provisioner.core.sizes import format_size
from provisioner.registry.client import ImageSummary
from provisioner.registry.offline_images import OfflineImage

registry_app = typer.Typer(help="The container registry nodes use as their Docker Hub mirror.\n\n"
                                "See docs/containers.md.", no_args_is_help=True)

DATA_DIR_HELP = "Data dir: images are kept in DATA_DIR/registry."


def _print(images: list[ImageSummary], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"images": [image.as_json() for image in images]}, indent=2))
        return
    typer.echo(f"{'REPOSITORY':<32} {'TAG':<16} {'DIGEST':<71} SIZE")
    for image in images:
        typer.echo(f"{image.repository:<32} {image.tag:<16} {image.digest:<71} {format_size(image.size)}")


@registry_app.command("import")
def import_command(
    archive: Path = typer.Argument(..., help="A `docker save` archive, an OCI archive or an OCI layout directory."),
    data_dir: Path = typer.Option(..., "--data-dir", "-D", help=DATA_DIR_HELP),
    name: str = typer.Option(None, "--name", help="REPOSITORY[:TAG] for an archive of one image "
                             "(default: the archive's own names)."),
    as_json: bool = typer.Option(False, "--json", help="Print the imported images as JSON."),
) -> None:
    """Import every image of an archive under its names; a broken archive changes nothing."""
    from provisioner.registry.importer import import_archive

    _print(import_archive(data_dir, archive, name), as_json)


@registry_app.command("build")
def build_command(
    image: OfflineImage = typer.Argument(..., help="busybox, or nginx (busybox httpd on port 80, named osones/nginx)."),
    data_dir: Path = typer.Option(None, "--data-dir", "-D", help=DATA_DIR_HELP),
    name: str = typer.Option(None, "--name", help="REPOSITORY[:TAG] (default library/busybox:latest, "
                             "osones/nginx:latest)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write an OCI archive here instead of importing."),
    as_json: bool = typer.Option(False, "--json", help="Print the imported image as JSON."),
) -> None:
    """Build an image offline from the host's busybox-static (deterministic) and import it."""
    from provisioner.registry.importer import build_image

    result = build_image(data_dir, image, name, output)
    if isinstance(result, Path):
        typer.echo(str(result))
    else:
        _print(result, as_json)


@registry_app.command("list")
def list_command(
    data_dir: Path = typer.Option(..., "--data-dir", "-D", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Repositories, tags, digests and sizes in the data dir's registry."""
    from provisioner.registry.importer import list_images

    _print(list_images(data_dir), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
