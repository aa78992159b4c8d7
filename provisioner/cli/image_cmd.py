"""`provisioner image build`: build the OS disk image, PXE kernel + initrd and the release directory."""

from __future__ import annotations

from pathlib import Path

import typer

from provisioner.cli.output import emit, emit_json
from provisioner.image.build import BuildOptions, build_image
from provisioner.image.recipe import DEFAULT_RECIPE_DIR
from provisioner.image.rootfs import DEFAULT_APT_CACHE

image_app = typer.Typer(help="Build the OS image (GPT disk image, PXE kernel + initrd, release directory).",
                        no_args_is_help=True)


@image_app.command("build")
def build(
    output: Path = typer.Option(Path("build/release"), "--output", "-o", help="Release base directory."),
    channel: str = typer.Option("stable", "--channel", "-C", help="Channel: releases go to OUTPUT/CHANNEL/."),
    version: str = typer.Option(None, "--version", "-V", help="Release version (default: the recipe's)."),
    recipe: Path = typer.Option(DEFAULT_RECIPE_DIR, "--recipe", help="Recipe directory (recipe.yaml, units, ...)."),
    work: Path = typer.Option(Path("build/image"), "--work", help="Work and cache directory."),
    apt_cache: Path = typer.Option(DEFAULT_APT_CACHE, "--apt-cache", help="Where downloaded .debs are kept."),
    gpg_home: Path = typer.Option(None, "--gpg-home", help="GnuPG home with the signing key (default: made)."),
    signing_key: str = typer.Option(None, "--signing-key", help="Key id/fingerprint in --gpg-home to sign with."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when nothing changed."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build the image from images/ and publish OUTPUT/CHANNEL/<version>/ and OUTPUT/CHANNEL/current."""
    result = build_image(BuildOptions(output=output, channel=channel, version=version, recipe_dir=recipe,
                                      work=work, apt_cache=apt_cache, gpg_home=gpg_home,
                                      signing_key=signing_key, force=force))
    if as_json:
        emit_json(result.to_json())
        return
    state = "up to date" if result.cached else f"built in {result.seconds:.0f} s"
    emit(f"{result.release_dir}: version {result.version}, {state}")
    for row in result.budgets:
        mark = "ok" if row["ok"] else "OVER BUDGET"
        emit(f"  {row['budget']}: {row['value']} {row['unit']} (budget {row['limit']} {row['unit']}) {mark}")


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
