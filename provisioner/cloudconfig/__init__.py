"""Cloud-config: coreos-cloudinit v1.13.0's schema, validator (same messages) and $variable substitution."""

from provisioner.cloudconfig.report import Entry, Report
from provisioner.cloudconfig.substitute import substitute
from provisioner.cloudconfig.validator import validate

__all__ = ["Entry", "Report", "substitute", "validate"]
