"""The members of a cluster, for templates that write a static etcd `initial-cluster`.

A group joins cluster T by carrying `cluster_token: T` in its metadata (the machines of examples/cluster
do). A template of such a group sees `cluster_members`: one dict per group with that token, its metadata
plus `id` (the group id), sorted by hostname (then id). With the groups' `ip` (which `provisioner serve`
also hands out as each MAC's static DHCP lease) the initial cluster is a loop (examples/cluster):

    initial-cluster: {% for m in cluster_members %}{{ m.hostname }}=http://{{ m.ip }}:2380
                     {{- "," if not loop.last }}{% endfor %}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from provisioner.inventory.model import Group

TOKEN_KEY = "cluster_token"


def cluster_members(groups: Iterable[Group], token: str) -> list[dict[str, Any]]:
    """Every group whose metadata has cluster_token == token, as {"id": ..., **metadata} (pure)."""
    members = [{"id": group.id, **group.metadata} for group in groups if group.metadata.get(TOKEN_KEY) == token]
    return sorted(members, key=lambda m: (str(m.get("hostname", "")), m["id"]))
