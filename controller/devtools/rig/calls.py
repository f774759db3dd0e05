"""Drive the rig's phone side (asterisk/extensions_rig.conf) through ARI.

The rig's phone is Asterisk calling itself over a second SIP transport:

- :func:`call_pbx` originates ``PJSIP/EXTEN@phone``; the PBX sees endpoint
  ``tester`` dialling EXTEN in context ``from-tester`` (100 and any number go
  to ``Stasis(voicebot,EXTEN)``, 101 to ``Stasis(voicebot,profile=sales)``,
  ``rig-echo``, ``rig-milliwatt`` and ``rig-play-NAME`` need no controller).
- :func:`call_local` does the same from a Local channel (no SIP, no RTP:
  silent stretches of its script send no frames at all).
- :func:`set_phone_script` says what the phone does when the PBX calls
  ``PJSIP/tester`` (or ``PJSIP/NAME@tester``).

What the phone does is a :class:`Script`: record what it hears, play files,
send DTMF, read DTMF, wait. It reports in global variables
``RIG_<ID>_STATE|PLAYED|DIGITS|CAUSE``, read with :func:`rig_result`.
File paths in a script are paths *inside* Asterisk; use
``sandbox.inside_path(sandbox.shared_dir / "x.wav")``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from asterisk.sandbox import Sandbox
from controller.devtools.rig.ari import AriClient, Event
from controller.devtools.rig.wait import wait_for

#: Rig endpoints (pjsip.conf / pjsip_rig.conf).
PHONE_ENDPOINT = "phone"
PBX_ENDPOINT = "tester"
CALLER_CONTEXT = "rig-caller"

_ID = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Script:
    """What the rig's phone does once the call is up (every field optional).

    record: file (inside Asterisk, .wav) to record what the phone hears.
    record_sent: file to record what the phone sends.
    delay: seconds before playing.
    play: file(s) to play, without extension, '&'-separated.
    dtmf: digits to send after playing (``w`` = 0.5 s pause).
    read: read up to this many DTMF digits (0 = until #).
    read_timeout: seconds to wait for each digit (default 10).
    wait: seconds to stay on the line afterwards (default 5).
    """

    record: str | None = None
    record_sent: str | None = None
    delay: float | None = None
    play: str | None = None
    dtmf: str | None = None
    read: int | None = None
    read_timeout: float | None = None
    wait: float | None = None

    def variables(self) -> dict[str, str]:
        """The RIG_* channel variables for this script (unset fields omitted)."""
        out = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out[f"RIG_{field.name.upper()}"] = _fmt(value)
        return out


def _fmt(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_id(value: str, what: str) -> None:
    if not _ID.match(value):
        raise ValueError(f"{what} must be letters, digits and _ only: {value!r}")


async def call_pbx(
    ari: AriClient,
    exten: str,
    script: Script | None = None,
    *,
    rig_id: str,
    channel_id: str | None = None,
    timeout: int = 30,
    variables: dict[str, str] | None = None,
) -> Event:
    """Have the rig's phone call the PBX's ``exten``; returns the phone-side channel.

    The phone runs ``script`` once the PBX answers; results land under ``rig_id``.
    """
    _check_id(rig_id, "rig_id")
    body_vars = {"RIG_ID": rig_id, **(script or Script()).variables(), **(variables or {})}
    params: dict[str, str | int | float | bool] = {
        "endpoint": f"PJSIP/{exten}@{PHONE_ENDPOINT}",
        "context": CALLER_CONTEXT,
        "extension": "s",
        "priority": 1,
        "timeout": timeout,
    }
    if channel_id:
        params["channelId"] = channel_id
    await reset_result(ari, rig_id)
    result: Event = await ari.post("/channels", {"variables": body_vars}, **params)
    return result


async def call_local(
    ari: AriClient,
    exten: str,
    script: Script | None = None,
    *,
    rig_id: str,
    context: str = "from-tester",
    timeout: int = 30,
) -> Event:
    """Call the PBX's ``exten`` from a Local channel instead of SIP; returns ``;1``.

    ``Local/EXTEN@CONTEXT;2`` runs the PBX's dialplan (so it is the caller the
    controller sees); ``;1`` runs ``script`` once answered. Unlike a SIP phone
    leg, a Local channel sends no frames at all while its script waits.
    """
    _check_id(rig_id, "rig_id")
    body_vars = {"RIG_ID": rig_id, **(script or Script()).variables()}
    await reset_result(ari, rig_id)
    result: Event = await ari.post(
        "/channels",
        {"variables": body_vars},
        endpoint=f"Local/{exten}@{context}",
        context=CALLER_CONTEXT,
        extension="s",
        priority=1,
        timeout=timeout,
    )
    return result


_PHONE_KEYS = (
    *("ID", "RECORD", "RECORD_SENT", "DELAY", "PLAY"),
    *("DTMF", "READ", "READ_TIMEOUT", "WAIT", "ANSWER"),
)


async def set_phone_script(
    ari: AriClient,
    script: Script | None = None,
    *,
    name: str = "phone",
    rig_id: str | None = None,
    answer: str = "yes",
) -> None:
    """Say what the rig's phone does when the PBX calls ``PJSIP/NAME@tester``
    (``name="phone"``: plain ``PJSIP/tester``). Clears what an earlier test set.

    answer: ``yes``, ``busy`` (486), ``no`` (rings until cancelled) or
    ``fail`` (503). Results land under ``rig_id`` (default: ``name``).
    The names of the outbound destinations (``company``, ``voicemail``,
    ``busy``, ``noanswer``, ``fail``: :mod:`.company`) run their own scripts.
    """
    _check_id(name, "name")
    if rig_id is not None:
        _check_id(rig_id, "rig_id")
    if answer not in ("yes", "busy", "no", "fail"):
        raise ValueError(f"answer must be yes, busy, no or fail: {answer!r}")
    values = {f"RIG_IN_{name}_{key}": "" for key in _PHONE_KEYS}
    for var, value in (script or Script()).variables().items():
        values[f"RIG_IN_{name}_{var.removeprefix('RIG_')}"] = value
    values[f"RIG_IN_{name}_ID"] = rig_id or ""
    values[f"RIG_IN_{name}_ANSWER"] = answer
    for var, value in values.items():
        await ari.set_global(var, value)
    await reset_result(ari, rig_id or name)


async def reset_result(ari: AriClient, rig_id: str) -> None:
    """Forget the results of an earlier call with the same ``rig_id``."""
    for key in ("STATE", "PLAYED", "DIGITS", "CAUSE"):
        await ari.set_global(f"RIG_{rig_id}_{key}", "")


async def rig_result(ari: AriClient, rig_id: str) -> dict[str, str]:
    """``{"state", "played", "digits", "cause"}`` as the phone side reported them."""
    return {
        key.lower(): await ari.get_global(f"RIG_{rig_id}_{key}")
        for key in ("STATE", "PLAYED", "DIGITS", "CAUSE")
    }


async def wait_rig_done(ari: AriClient, rig_id: str, timeout: float = 20.0) -> dict[str, str]:
    """Wait until the phone side of answered call ``rig_id`` has hung up; return its results.

    A call the phone places that the PBX never answers reports nothing: wait
    for :func:`wait_no_channels` instead.
    """

    async def done() -> dict[str, str] | None:
        result = await rig_result(ari, rig_id)
        return result if result["state"] == "done" else None

    result = await wait_for(done, timeout, what=f"rig call {rig_id} to end", interval=0.1)
    assert result is not None
    return result


async def wait_nothing_left(ari: AriClient, timeout: float = 10.0) -> None:
    """Wait until Asterisk has no channel and no bridge (GET /channels, GET /bridges)."""

    async def empty() -> bool:
        return not await ari.channels() and not await ari.get("/bridges")

    await wait_for(empty, timeout, what="no channels and no bridges")


def playable(asterisk: Sandbox, wav: Path) -> str:
    """What ``Script(play=...)`` takes for a WAV in the shared directory:
    the path inside Asterisk, without the extension."""
    return asterisk.inside_path(wav.with_suffix(""))


async def wait_no_channels(ari: AriClient, timeout: float = 10.0) -> None:
    """Wait until Asterisk has no channels at all."""

    async def none_left() -> bool:
        return not await ari.channels()

    await wait_for(none_left, timeout, what="all channels to be gone")
