"""A tiny blocking ARI client on urllib, for the sandbox's own needs.

The sandbox uses it to see that Asterisk is up (``GET /asterisk/ping``), and
callers may use it through :meth:`Sandbox.ari <.process.Sandbox.ari>` for
one-off requests. It speaks JSON with HTTP basic authentication, never
goes through a proxy, and turns every failure into a one-line
:class:`~.common.SandboxError`. The controller has its own asynchronous
client; this one exists so the sandbox needs nothing but the standard library.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from .common import SandboxError

__all__ = ["ari_request"]


def ari_request(
    base_url: str,
    user: str,
    password: str,
    method: str,
    path: str,
    params: Mapping[str, str | int | float] | None = None,
    body: Any = None,
    *,
    timeout: float = 10.0,
) -> Any:
    """A blocking ARI request; returns decoded JSON or None.

    Args:
        base_url: Asterisk's HTTP server, e.g. ``http://127.0.0.1:8088``.
        user: ARI user name.
        password: ARI password.
        method: HTTP method (any case).
        path: relative to ``/ari``, e.g. ``/asterisk/ping``.
        params: query parameters.
        body: sent as JSON unless None.
        timeout: seconds for the whole request.

    Raises:
        SandboxError: on connection errors and HTTP error statuses.
    """
    url = f"{base_url}/ari/{path.lstrip('/')}"
    if params:
        url += "?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method.upper())
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise SandboxError(
            f"ARI {method.upper()} /ari/{path.lstrip('/')}: HTTP {exc.code} {detail}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SandboxError(f"ARI {base_url} unreachable: {reason}") from None
    return json.loads(payload) if payload.strip() else None
