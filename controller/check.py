"""``ari-realtime check``: a preflight that says in plain words what is wrong.

Each check yields one :class:`CheckResult` line. Checks that depend on an
earlier one (modules need a reachable, authenticated ARI) are reported as
skipped rather than as confusing follow-on failures.

Servers answer with their own words (a model server may echo the key it
rejected), so every line is masked before it is returned: the configured
secrets, anything that looks like one of them, and credentials in URLs
become ``***`` (:func:`mask_results`). Settings that look like ours but are
not (``OUTBOUND_ALOW``) are ``warn`` lines.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import InvalidStatus

from controller.agents import load_agents_file
from controller.ari.rest import AriClient
from controller.config import Settings, secret_values
from controller.errors import (
    AriAuthError,
    AriConnectionError,
    AriError,
    ConfigError,
    RealtimeConnectionError,
    RealtimeProtocolError,
)
from controller.realtime.events import ErrorEvent, SessionCreated
from controller.realtime.session import connect_realtime
from controller.redact import SecretMasker, escape_controls, mask_url, mask_urls_in

#: Modules the controller cannot work without, with what each is for.
REQUIRED_MODULES: dict[str, str] = {
    "res_ari.so": "the REST interface itself",
    "res_ari_channels.so": "answering calls and creating externalMedia channels",
    "res_ari_bridges.so": "mixing the caller with the externalMedia channel",
    "res_ari_events.so": "the events websocket",
    "app_stasis.so": "Stasis() in the dialplan",
    "res_stasis.so": "Stasis apps",
    "chan_rtp.so": "externalMedia (UnicastRTP channels)",
    "res_rtp_multicast.so": "chan_rtp, which will not load without it",
    "res_rtp_asterisk.so": "RTP",
    "codec_ulaw.so": "u-law audio on the externalMedia leg",
    "res_http_websocket.so": "the events websocket",
}
#: One of these mixes audio in a bridge.
BRIDGE_MODULES = ("bridge_softmix.so", "bridge_simple.so")


@dataclass(frozen=True)
class CheckResult:
    """One line of the preflight report."""

    status: str  # "ok" | "FAIL" | "skip" | "warn"
    name: str
    detail: str

    def line(self) -> str:
        """The report line."""
        return f"{self.status:<4} {self.name}: {self.detail}"


async def run_checks(
    settings: Settings, *, timeout: float = 5.0, warnings: Iterable[str] = ()
) -> list[CheckResult]:
    """Run every check and return the results in order, secrets masked.

    Args:
        settings: the settings to check.
        timeout: seconds allowed for each network check.
        warnings: lines from :func:`~controller.config.setting_warnings`,
            reported first as ``warn`` lines.
    """
    results = [CheckResult("warn", "settings", line) for line in warnings]
    results.extend(await _check_ari(settings, timeout))
    agents_result, tool_secrets = _check_agents(settings)
    results.append(agents_result)
    results.append(_check_media(settings))
    results.append(await _check_model(settings, timeout))
    return mask_results(results, secret_values(settings, tool_secrets))


def mask_results(results: list[CheckResult], secrets: Iterable[str]) -> list[CheckResult]:
    """``results`` with secrets, their look-alikes and URL credentials masked, one line each."""
    masker = SecretMasker(secrets)
    return [
        CheckResult(r.status, r.name, escape_controls(masker.mask(mask_urls_in(r.detail))))
        for r in results
    ]


async def _check_ari(settings: Settings, timeout: float) -> list[CheckResult]:
    out: list[CheckResult] = []
    password = settings.ari_password.get_secret_value()
    async with AriClient(settings.ari_url, settings.ari_user, password, timeout=timeout) as ari:
        try:
            info = await ari.info()
        except AriConnectionError:
            out.append(
                CheckResult(
                    "FAIL",
                    "ARI",
                    f"cannot reach Asterisk at {settings.ari_url}. Is Asterisk running, and "
                    "does http.conf have enabled=yes with this bindaddr/bindport?",
                )
            )
            out.append(CheckResult("skip", "credentials", "ARI unreachable"))
            out.append(CheckResult("skip", "modules", "ARI unreachable"))
            out.append(CheckResult("skip", "app", "ARI unreachable"))
            return out
        except AriAuthError:
            out.append(CheckResult("ok", "ARI", f"Asterisk answers at {settings.ari_url}"))
            out.append(
                CheckResult(
                    "FAIL",
                    "credentials",
                    f"Asterisk rejected ARI user {settings.ari_user!r}: check ARI_USER and "
                    "ARI_PASSWORD against a type=user section in ari.conf",
                )
            )
            out.append(CheckResult("skip", "modules", "not authenticated"))
            out.append(CheckResult("skip", "app", "not authenticated"))
            return out
        except AriError as exc:
            out.append(CheckResult("FAIL", "ARI", f"unexpected answer from Asterisk: {exc}"))
            return out
        system = info.get("system")
        version = str(system.get("version", "unknown")) if isinstance(system, dict) else "unknown"
        out.append(CheckResult("ok", "ARI", f"Asterisk {version} answers at {settings.ari_url}"))
        out.append(CheckResult("ok", "credentials", f"ARI user {settings.ari_user!r} accepted"))
        out.append(await _check_modules(ari))
        out.append(await _check_app(ari, settings.ari_app))
    return out


async def _check_modules(ari: AriClient) -> CheckResult:
    try:
        modules = await ari.modules()
    except AriError as exc:
        return CheckResult(
            "FAIL",
            "modules",
            f"cannot list modules ({exc}); load res_ari_asterisk.so so this check can run",
        )
    running = {str(m.get("name")) for m in modules if m.get("status") == "Running"}
    missing = [f"{name} ({why})" for name, why in REQUIRED_MODULES.items() if name not in running]
    if not any(name in running for name in BRIDGE_MODULES):
        missing.append(" or ".join(BRIDGE_MODULES) + " (mixing bridges)")
    if missing:
        return CheckResult(
            "FAIL",
            "modules",
            "not loaded: " + "; ".join(missing) + ". Add load=... lines to modules.conf "
            "(or 'module load NAME' at the Asterisk CLI)",
        )
    return CheckResult("ok", "modules", f"all {len(REQUIRED_MODULES) + 1} required modules loaded")


async def _check_app(ari: AriClient, app: str) -> CheckResult:
    try:
        apps = await ari.applications()
    except AriError as exc:
        return CheckResult("FAIL", "app", f"cannot list Stasis apps: {exc}")
    if any(a.get("name") == app for a in apps):
        return CheckResult(
            "warn",
            "app",
            f"Stasis app {app!r} is already registered by another connection; a second "
            "controller with the same ARI_APP takes its calls away (ApplicationReplaced)",
        )
    return CheckResult(
        "ok",
        "app",
        f"Stasis app {app!r} is free; route calls to it with Stasis({app}) in the dialplan",
    )


def _check_agents(settings: Settings) -> tuple[CheckResult, list[str]]:
    """The agents line, and the header values of its tools (secrets to mask)."""
    if not settings.agents_file:
        return CheckResult("ok", "agents", "no AGENTS_FILE: every call gets the default agent"), []
    try:
        agents = load_agents_file(settings.agents_file)
    except ConfigError as exc:
        return CheckResult("FAIL", "agents", str(exc)), []
    result = CheckResult(
        "ok",
        "agents",
        f"{settings.agents_file}: {len(agents.profiles)} profile(s), "
        f"{len(agents.transfer_targets)} transfer target(s), {len(agents.tools)} custom tool(s)",
    )
    return result, [v for tool in agents.tools.values() for v in tool.headers.values()]


def _check_media(settings: Settings) -> CheckResult:
    address = settings.media_address
    if not media_address_bindable(address):
        return CheckResult(
            "FAIL",
            "media",
            f"cannot bind UDP on MEDIA_ADDRESS={address}: it is not an address of this host. "
            "Set MEDIA_ADDRESS to an address of this machine that Asterisk can reach",
        )
    first, last = settings.media_port_range
    free = 0
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for port in range(first, min(last, first + 63) + 1):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            free += 1
    if free == 0:
        return CheckResult(
            "FAIL",
            "media",
            f"no free UDP port in MEDIA_PORTS={settings.media_ports} on {address}; "
            "pick a range nothing else uses",
        )
    return CheckResult(
        "ok",
        "media",
        f"UDP on {address} ports {settings.media_ports} bindable "
        f"({last - first + 1} ports = max concurrent calls)",
    )


async def _check_model(settings: Settings, timeout: float) -> CheckResult:
    """Open the model's websocket as a call does and read its first event.

    The connection is made by :func:`~controller.realtime.session.connect_realtime`,
    the same code (URL with ``?model=``, auth headers, handshake errors) a call
    uses. A healthy endpoint says ``session.created``; a wrong key gets an
    ``error`` event (OpenAI upgrades first, then complains).
    """
    where = mask_url(urlunsplit(urlsplit(settings.realtime_url)._replace(query="")))
    try:
        session = await connect_realtime(
            settings.realtime_url,
            settings.openai_api_key,
            settings.realtime_model,
            azure=settings.is_azure,
            timeout=timeout,
        )
    except RealtimeConnectionError as exc:
        return _model_unreachable(where, exc, timeout)
    try:
        async with session, asyncio.timeout(timeout):
            first = await session.recv()
    except TimeoutError:
        return CheckResult("FAIL", "model", f"no answer from {where} within {timeout:g}s")
    except RealtimeConnectionError as exc:
        return CheckResult("FAIL", "model", f"{where} closed the websocket at once: {exc}")
    except RealtimeProtocolError as exc:
        return CheckResult("FAIL", "model", f"{where} does not speak the Realtime protocol: {exc}")
    if isinstance(first, SessionCreated):
        return CheckResult("ok", "model", f"{where} opened a session for {settings.realtime_model}")
    if isinstance(first, ErrorEvent):
        code = first.error.code or first.type
        message = first.error.message or ""
    else:
        code, message = first.type, ""
    return CheckResult("FAIL", "model", f"{where} answered with {code}: {message}".strip())


def _model_unreachable(where: str, exc: RealtimeConnectionError, timeout: float) -> CheckResult:
    """The result line for a connection :func:`connect_realtime` could not open.

    ``connect_realtime`` chains the library's exception as ``__cause__``
    (unless its text carries the key); that tells a refusal from a timeout.
    """
    cause = exc.__cause__
    if isinstance(cause, InvalidStatus):
        status = cause.response.status_code
        hint = " (check OPENAI_API_KEY)" if status in (401, 403) else ""
        return CheckResult("FAIL", "model", f"{where} refused the websocket: HTTP {status}{hint}")
    if isinstance(cause, TimeoutError):
        return CheckResult("FAIL", "model", f"no answer from {where} within {timeout:g}s")
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    return CheckResult(
        "FAIL",
        "model",
        f"cannot reach the model at {where}: {reason}. "
        "Check REALTIME_URL and that this host may connect to it",
    )


def media_address_bindable(address: str) -> bool:
    """True if a UDP socket can be bound on ``address`` (any port)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True
