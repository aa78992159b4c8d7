"""Rendering per-host configs from the inventory: Jinja2 (StrictUndefined), matchbox Go templates."""

from provisioner.render.renderer import NoMatch, Renderer

__all__ = ["NoMatch", "Renderer"]
