"""``ari-realtime check``: a preflight that says in plain words what is wrong.

Each check yields one :class:`CheckResult` line, always in the same order
(:data:`CHECKS`). A check that an earlier failure makes impossible (modules
need a reachable, authenticated ARI) is reported as ``skip`` with the reason,
never left out and never a confusing follow-on failure. A line that fails
says what to do about it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from websockets.exceptions import InvalidStatus

from controller.agents import AgentsFile, load_agents_file
from controller.ari.rest import AriClient
from controller.config import Settings, ari_url_advice, secret_values
from controller.errors import (
    AriAuthError,
    AriConnectionError,
    AriError,
    AriNotFound,
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
#: The voices of the OpenAI Realtime API's GA models (gpt-realtime and its successors).
REALTIME_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
#: Every line of the report, in order.
CHECKS = ("ARI", "credentials", "modules", "app", "agents", "media", "model", "voice")
#: The lines that need an answering, authenticated ARI.
_ARI_DEPENDENT = ("credentials", "modules", "app")


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
    """Run every check and return one result per name in :data:`CHECKS`, in that
    order (after ``warn`` lines for ``warnings``), secrets masked.

    Args:
        settings: the settings to check.
        timeout: seconds allowed for each network check.
        warnings: lines from :func:`~controller.config.setting_warnings`.
    """
    results = [CheckResult("warn", "settings", line) for line in warnings]
    results.extend(await _check_ari(settings, timeout))
    agents_result, agents = _check_agents(settings)
    results.append(agents_result)
    results.append(_check_media(settings))
    results.append(await _check_model(settings, timeout))
    results.append(check_voices(settings, agents))
    return mask_results(results, secret_values(settings, agents.secrets() if agents else []))


def mask_results(results: list[CheckResult], secrets: Iterable[str]) -> list[CheckResult]:
    """``results`` with secrets, their look-alikes and URL credentials masked, one line each."""
    masker = SecretMasker(secrets)
    return [
        CheckResult(r.status, r.name, escape_controls(masker.mask(mask_urls_in(r.detail))))
        for r in results
    ]


def _skipped(reason: str, names: tuple[str, ...] = _ARI_DEPENDENT) -> list[CheckResult]:
    return [CheckResult("skip", name, reason) for name in names]


def _unreachable_advice(exc: AriConnectionError) -> str:
    """What to look at, by what failed (the reason itself is already in the line)."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientSSLError):
        return "ARI_URL must start with http:// unless http.conf has tlsenable=yes"
    if isinstance(cause, aiohttp.ClientConnectorError) and isinstance(
        cause.os_error, socket.gaierror
    ):
        return "Check the host name in ARI_URL"
    return "Is Asterisk running, and does http.conf have enabled=yes with this bindaddr/bindport?"


def _password_not_set(settings: Settings) -> CheckResult:
    return CheckResult(
        "FAIL",
        "credentials",
        f"ARI_PASSWORD is not set: set it to the password of ARI user {settings.ari_user!r} "
        f"(the [{settings.ari_user}] section with type=user in ari.conf)",
    )


async def _check_ari(settings: Settings, timeout: float) -> list[CheckResult]:
    """The ARI, credentials, modules and app lines (always all four)."""
    url = settings.ari_url
    password = settings.ari_password.get_secret_value()
    async with AriClient(url, settings.ari_user, password, timeout=timeout) as ari:
        try:
            info = await ari.info()
        except AriConnectionError as exc:
            unreachable = CheckResult(
                "FAIL",
                "ARI",
                f"cannot reach Asterisk at {url}: {exc.reason or exc}. {_unreachable_advice(exc)}",
            )
            if not password:  # known without asking Asterisk: say it now
                missing = _password_not_set(settings)
                return [unreachable, missing, *_skipped("ARI unreachable", ("modules", "app"))]
            return [unreachable, *_skipped("ARI unreachable")]
        except AriAuthError:
            answers = CheckResult("ok", "ARI", f"Asterisk answers at {url}")
            advice = ari_url_advice(url)
            if advice:  # ARI asks for credentials before it looks the path up
                answers = CheckResult("warn", "ARI", f"Asterisk answers at {url}, but {advice}")
            if password:
                rejected = CheckResult(
                    "FAIL",
                    "credentials",
                    f"Asterisk rejected ARI user {settings.ari_user!r}: check ARI_USER and "
                    "ARI_PASSWORD against a type=user section in ari.conf",
                )
            else:
                rejected = _password_not_set(settings)
            return [answers, rejected, *_skipped("not authenticated", ("modules", "app"))]
        except AriNotFound as exc:
            advice = ari_url_advice(url)
            if advice:
                detail = f"{advice} (Asterisk answered {url}/ari/asterisk/info with HTTP 404)"
            else:
                detail = (
                    f"Asterisk's HTTP server at {url} answers, but not ARI ({exc}): load "
                    "res_ari.so and res_ari_asterisk.so in modules.conf; if http.conf sets "
                    "a prefix, ARI_URL must end with it"
                )
            return [CheckResult("FAIL", "ARI", detail), *_skipped("no ARI at ARI_URL")]
        except AriError as exc:
            return [
                CheckResult("FAIL", "ARI", f"unexpected answer from Asterisk at {url}: {exc}"),
                *_skipped("ARI answered with an error"),
            ]
        system = info.get("system")
        version = str(system.get("version", "unknown")) if isinstance(system, dict) else "unknown"
        return [
            CheckResult("ok", "ARI", f"Asterisk {version} answers at {url}"),
            CheckResult("ok", "credentials", f"ARI user {settings.ari_user!r} accepted"),
            await _check_modules(ari),
            await _check_app(ari, settings.ari_app, outbound=settings.ari_mode == "outbound"),
        ]


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


async def _check_app(ari: AriClient, app: str, *, outbound: bool = False) -> CheckResult:
    try:
        apps = await ari.applications()
    except AriError as exc:
        return CheckResult("FAIL", "app", f"cannot list Stasis apps: {exc}")
    registered = any(a.get("name") == app for a in apps)
    if outbound:
        if registered:
            return CheckResult(
                "FAIL",
                "app",
                f"Stasis app {app!r} is registered by a connection to Asterisk, which takes "
                "precedence over the per-call websockets of ARI_MODE=outbound: stop that "
                "inbound-mode controller (or use another ARI_APP)",
            )
        return CheckResult(
            "ok",
            "app",
            f"Stasis app {app!r} is not registered: Stasis({app}) opens a websocket per "
            "call to the pool (ari.conf type=outbound_websocket for it, see ari_pool.conf)",
        )
    if registered:
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


def _check_agents(settings: Settings) -> tuple[CheckResult, AgentsFile | None]:
    if not settings.agents_file:
        return CheckResult(
            "ok", "agents", "no AGENTS_FILE: every call gets the default agent"
        ), None
    try:
        agents = load_agents_file(settings.agents_file, settings=settings)
    except ConfigError as exc:
        return CheckResult("FAIL", "agents", str(exc)), None
    result = CheckResult(
        "ok",
        "agents",
        f"{settings.agents_file}: {len(agents.profiles)} profile(s), "
        f"{len(agents.transfer_targets)} transfer target(s), {len(agents.tools)} custom tool(s)",
    )
    return result, agents


def check_voices(settings: Settings, agents: AgentsFile | None) -> CheckResult:
    """``REALTIME_VOICE`` and every profile's ``voice`` against the model's voices.

    A warning, not a failure: the list is this release's knowledge, and a
    server other than OpenAI's may have voices of its own. OpenAI itself
    rejects a ``session.update`` naming another voice, and the call is then
    handed back to the dialplan.
    """
    model = settings.realtime_model
    # Azure deployments and other servers have names of their own; the
    # protocol's voices are the best guess there.
    whose = f"{model}'s" if model.startswith("gpt-realtime") else "the Realtime API's"
    chosen = [(f"REALTIME_VOICE={settings.realtime_voice}", settings.realtime_voice)]
    if agents is not None:
        chosen += [
            (f"profile {name!r} voice={p.voice}", p.voice)
            for name, p in agents.profiles.items()
            if p.voice is not None
        ]
    unknown = [where for where, voice in chosen if voice not in REALTIME_VOICES]
    if unknown:
        return CheckResult(
            "warn",
            "voice",
            f"{' and '.join(unknown)}: not one of {whose} voices "
            f"({', '.join(REALTIME_VOICES)}). OpenAI rejects the session with it and calls "
            "are handed back to the dialplan; pick one of those",
        )
    return CheckResult(
        "ok", "voice", f"{' and '.join(where for where, _ in chosen)}: one of {whose} voices"
    )


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
    # No key is sent then; a server that needs none may still open a session.
    keyless = not settings.openai_api_key.get_secret_value()
    try:
        session = await connect_realtime(
            settings.realtime_url,
            settings.openai_api_key,
            settings.realtime_model,
            azure=settings.is_azure,
            timeout=timeout,
        )
    except RealtimeConnectionError as exc:
        cause = exc.__cause__
        if (
            keyless
            and isinstance(cause, InvalidStatus)
            and cause.response.status_code in (401, 403)
        ):
            return _key_not_set(where, f"HTTP {cause.response.status_code}")
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
        without = " without an API key (OPENAI_API_KEY is not set)" if keyless else ""
        return CheckResult(
            "ok", "model", f"{where} opened a session for {settings.realtime_model}{without}"
        )
    if isinstance(first, ErrorEvent):
        code = first.error.code or first.type
        message = first.error.message or ""
        if keyless:
            return _key_not_set(where, code)
    else:
        code, message = first.type, ""
    return CheckResult("FAIL", "model", f"{where} answered with {code}: {message}".strip())


def _key_not_set(where: str, answer: str) -> CheckResult:
    return CheckResult(
        "FAIL",
        "model",
        f"OPENAI_API_KEY is not set, and {where} wants a key ({answer}): set OPENAI_API_KEY "
        "to your API key (Azure: the resource's key; the local model server takes any value)",
    )


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
    reason = _plain_reason(cause, where) if cause is not None else str(exc)
    return CheckResult(
        "FAIL",
        "model",
        f"cannot reach the model at {where}: {reason}. "
        "Check REALTIME_URL and that this host may connect to it",
    )


def _plain_reason(cause: BaseException, where: str) -> str:
    """Why the websocket did not open, in plain words (not ``[Errno 111] Connect call failed``)."""
    parts = urlsplit(where)
    host = parts.hostname or where
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {host} was not accepted ({cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        return f"the TLS handshake with {host}:{port} failed"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name {host}"
    if isinstance(cause, OSError):
        number = cause.errno
        if number is None:
            # asyncio's "Multiple exceptions: [Errno 111] ... ('::1', ...), [Errno 111] ..."
            # when every address of the name failed.
            found = set(re.findall(r"\[Errno (\d+)\]", str(cause)))
            number = int(found.pop()) if len(found) == 1 else None
        if number == errno.ECONNREFUSED:
            return f"connection refused: nothing listens on {host}:{port}"
        if number is not None:
            text = os.strerror(number)
            return text[:1].lower() + text[1:]
    return f"{type(cause).__name__}: {cause}"


def media_address_bindable(address: str) -> bool:
    """True if a UDP socket can be bound on ``address`` (any port)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True
