"""Inventory: a matchbox-compatible data dir (profiles, groups, templates) and machine matching."""

from provisioner.inventory.identifiers import normalize_mac, normalize_uuid
from provisioner.inventory.inventory import Inventory, Match, Selection
from provisioner.inventory.loader import load_inventory
from provisioner.inventory.model import Boot, Group, Profile
from provisioner.inventory.query import MachineQuery

__all__ = [
    "Boot", "Group", "Inventory", "MachineQuery", "Match", "Profile", "Selection",
    "load_inventory", "normalize_mac", "normalize_uuid",
]
