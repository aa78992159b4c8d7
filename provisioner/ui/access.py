"""Who may open the pages (pure): the admin API's rules (admin_access.py), made bearable for a browser.

The pages are on the admin address, so the admin API's address check applies first (loopback plus
`serve --admin-allow`, 403 otherwise). From loopback they open without the token: whoever is on the
server's host (or at the end of an SSH tunnel to it) could read the state dir anyway. From any other
allowed address the browser asks for the admin token once: /ui/login checks it and sets a cookie
holding a keyed hash of it, so the token itself is never stored in the browser by the server, and
rotating the token (`provisioner machines rotate-token`) ends every session.

The cookie only opens the pages, which only read. Every action (reinstall) goes to the admin API
itself with the token in its Authorization header, typed into the page by the operator: a cookie
never authorises a change, so another site cannot make a browser change anything (no CSRF).
"""

from __future__ import annotations

import hashlib
import hmac

from provisioner.pxe.admin_access import LOOPBACK, address_allowed

COOKIE = "provisioner_ui"


def session_value(token: str) -> str:
    """The cookie's value for the admin token `token`."""
    return hmac.new(token.encode(), b"provisioner ui session", hashlib.sha256).hexdigest()


def session_valid(token: str, cookie: str | None) -> bool:
    return bool(cookie) and hmac.compare_digest(session_value(token), cookie or "")


def needs_login(remote: str | None) -> bool:
    """Does a request from `remote` need the token (once) to see the pages?"""
    return not address_allowed(remote, LOOPBACK)
