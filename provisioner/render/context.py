"""The variables a host's templates see.

Same keys and precedence as matchbox (http/parse.go collectVariables): group metadata, then the
group's selectors (keys lower-cased), then `request` = {query, raw_query}. We add, underneath
everything (so a group can override them): `server_url` (the provisioning server, for URLs to
assets/configs), `group_id` and `profile_id`; for a group with a `cluster_token`, the groups of that
cluster as `cluster_members` (render/cluster.py); when the server runs the container registry,
`registry_url` (http://HOST:PORT, docker's registry-mirrors entry) and `registry_host` (HOST:PORT, its
insecure-registries entry). Without a registry they are undefined: `{% if registry_url is defined %}`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from provisioner.inventory import Group, MachineQuery, Selection
from provisioner.render.cluster import TOKEN_KEY, cluster_members


def host_context(match: Selection, query: MachineQuery, server_url: str | None, *,
                 registry_url: str | None = None, groups: Iterable[Group] = ()) -> dict[str, Any]:
    """The template variables for `match`; `groups` (the inventory's) give `cluster_members`."""
    context: dict[str, Any] = {
        "server_url": server_url or "",
        "group_id": match.group.id,
        "profile_id": match.group.profile,
    }
    if registry_url:
        context["registry_url"] = registry_url
        context["registry_host"] = registry_url.split("://", 1)[-1]
    token = match.group.metadata.get(TOKEN_KEY)
    if isinstance(token, str) and token:
        context["cluster_members"] = cluster_members(groups, token)
    context.update(match.group.metadata)
    context.update({key.lower(): value for key, value in match.group.selector})
    context["request"] = {"query": query.as_labels(), "raw_query": query.raw_query}
    return context
