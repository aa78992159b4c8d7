"""provisioner: take bare-metal servers from power-on to a running CoreOS-style cluster."""

__version__ = "0.1.0"
