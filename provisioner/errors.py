"""One error tree for the whole toolkit.

Library code raises these; only the CLI (provisioner.cli.main) turns them into exit codes:
0 ok, 1 error, 2 usage, 3 partial/degraded. Each message is one line that names the file,
field, device or command it is about, so an operator can act on it without a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class ProvisionerError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = EXIT_ERROR


class UsageError(ProvisionerError):
    """The command line itself is wrong (bad option combination, bad value)."""

    exit_code = EXIT_USAGE


class PartialError(ProvisionerError):
    """The job finished only partly; the message says what is left and how to finish."""

    exit_code = EXIT_PARTIAL


class ConfigError(ProvisionerError):
    """An input file (inventory, cloud-config, recipe) is malformed: message starts with 'path[:line]: '."""


class TemplateError(ConfigError):
    """A template failed to render: names the template, the line and the variable."""


class ValidationError(ConfigError):
    """A document failed validation (e.g. a rendered cloud-config with errors)."""


class CommandError(ProvisionerError):
    """An external command failed (see provisioner.core.commands.run)."""

    def __init__(self, argv: list[str], returncode: int, stderr: str = "", hint: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.hint = hint
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        msg = f"command failed (exit {returncode}): {' '.join(argv)}"
        if last:
            msg += f": {last}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class DiskError(ProvisionerError):
    """A disk operation was refused or failed; the message says what state the disk is in."""


class InstallError(ProvisionerError):
    """The installer could not finish; the message says whether the disk was touched."""


class VerifyError(InstallError):
    """A digest or signature did not match."""


class NetworkError(ProvisionerError):
    """A download, socket or server problem."""


class RemoteError(ProvisionerError):
    """An SSH session or a remote command failed."""


class ImageBuildError(ProvisionerError):
    """An OS image build step failed; names the step."""


class RegistryError(ProvisionerError):
    """The container registry refused an image or failed; names the archive member, image or registry,
    and says whether the registry was changed."""
