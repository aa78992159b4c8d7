"""Compiled templates with strict undefined handling and errors that name template, line and variable.

One Jinja2 environment per data dir. Templates are compiled once and kept (the server builds a new
store when the data dir changes), so rendering a host never reads the disk or compiles on the hot
path. Go-syntax templates (matchbox data dirs) are translated on load (gotemplate.py).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path

import jinja2

from provisioner.errors import TemplateError
from provisioner.render.gotemplate import looks_like_go_template, translate_go_template


class _DataDirLoader(jinja2.BaseLoader):
    def __init__(self, root: Path):
        self.root = root

    def get_source(self, environment: jinja2.Environment, template: str):
        path = (self.root / template).resolve()
        if self.root.resolve() not in path.parents:
            raise jinja2.TemplateNotFound(template)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise jinja2.TemplateNotFound(template) from None
        if looks_like_go_template(source):
            source = translate_go_template(source, template)
        return source, str(path), lambda: True


def make_environment(root: Path | None = None) -> jinja2.Environment:
    return jinja2.Environment(
        loader=_DataDirLoader(root) if root is not None else None,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,
        cache_size=-1,
    )


class TemplateStore:
    """Templates of one data dir (`cloud/x.yaml.j2` ...) plus inline ones (profile boot args)."""

    def __init__(self, root: Path):
        self.root = root
        self.environment = make_environment(root)
        self._inline: dict[str, jinja2.Template] = {}
        self._lock = threading.Lock()

    def render(self, name: str, context: Mapping, *, what: str = "") -> str:
        """Render template `name` (relative to the data dir). Raises TemplateError."""
        try:
            template = self.environment.get_template(name)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{name}: template not found in {self.root}{_for(what)}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{name}:{exc.lineno}: template syntax error: {exc.message}{_for(what)}") from None
        return _render(template, context, name, what)

    def render_inline(self, source: str, context: Mapping, *, name: str, what: str = "") -> str:
        """Render a short template string (e.g. a boot argument); compiled once per distinct source."""
        template = self._inline.get(source)
        if template is None:
            try:
                template = self.environment.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{name}: template syntax error: {exc.message}{_for(what)}") from None
            with self._lock:
                self._inline[source] = template
        return _render(template, context, name, what)


def _for(what: str) -> str:
    return f" (rendering {what})" if what else ""


def _render(template: jinja2.Template, context: Mapping, name: str, what: str) -> str:
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, template)
        raise TemplateError(f"{name}{line}: {_describe_undefined(str(exc.message))}{_for(what)}") from None
    except TemplateError:
        raise
    except Exception as exc:  # a template may call filters that fail on odd data
        line = _template_line(exc, template)
        raise TemplateError(f"{name}{line}: {type(exc).__name__}: {exc}{_for(what)}") from None


def _template_line(exc: BaseException, template: jinja2.Template) -> str:
    # Jinja rewrites tracebacks so template frames carry the template's file name and line.
    filename = template.filename or "<template>"
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f":{line}" if line else ""


def _describe_undefined(message: str) -> str:
    match = re.match(r"^'(.+)' is undefined$", message)
    if match:
        return f"undefined variable {match.group(1)!r}"
    match = re.match(r"^'(.+)' has no attribute '(.+)'$", message)
    if match:
        return f"undefined variable: no key {match.group(2)!r} in {match.group(1)}"
    return f"undefined variable ({message})"
