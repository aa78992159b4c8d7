"""The variables a host's templates see.

Same keys and precedence as matchbox (http/parse.go collectVariables): group metadata, then the
group's selectors (keys lower-cased), then `request` = {query, raw_query}. We add, underneath
everything (so a group can override them): `server_url` (the provisioning server, for URLs to
assets/configs), `group_id` and `profile_id`.
"""

from __future__ import annotations

from typing import Any

from provisioner.inventory import MachineQuery, Selection


def host_context(match: Selection, query: MachineQuery, server_url: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "server_url": server_url or "",
        "group_id": match.group.id,
        "profile_id": match.group.profile,
    }
    context.update(match.group.metadata)
    context.update({key.lower(): value for key, value in match.group.selector})
    context["request"] = {"query": query.as_labels(), "raw_query": query.raw_query}
    return context
