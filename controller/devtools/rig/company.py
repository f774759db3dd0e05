"""The rig's outbound destinations: a company with a phone menu, a voicemail, failed calls.

The PBX (the controller) reaches them by dialling ``PJSIP/NAME@tester``;
``asterisk/extensions_rig.conf`` (its header) says what each one does:

- ``company``: a menu read with ``Read()`` (1 sales, 2 support), hold
  (announcement and music), then a person who greets, listens, records what
  it hears and optionally says more (``replies``);
- ``voicemail``: a greeting, a beep, then ``Record()`` of the message;
- ``busy`` (486, cause 17), ``noanswer`` (rings until the caller gives up),
  ``fail`` (503, cause 34).

A test makes the prompts once (:func:`make_prompts`, espeak-ng into the shared
directory), configures a destination (:func:`set_company`,
:func:`set_voicemail`, :func:`reset_destination`), lets the PBX call it and
reads what happened (:func:`destination_result`, :func:`wait_destination_done`)::

    make_prompts(asterisk.shared_dir)
    await set_company(ari, hold=4, listen=6)
    ...  # the controller dials PJSIP/company@tester and presses 2
    result = await wait_destination_done(ari, "company", timeout=60)
    assert result.digits == "2" and result.trail[:3] == ["menu", "hold", "person"]
    heard = asterisk.host_path(result.heard)  # what the person heard (WAV)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import make_speech, make_tones
from controller.devtools.rig.calls import _check_id
from controller.devtools.rig.wait import wait_for

__all__ = [
    "DESTINATIONS",
    "MUSIC_NOTES",
    "PROMPTS",
    "STAGES",
    "DestinationResult",
    "destination_result",
    "make_prompts",
    "reset_destination",
    "set_company",
    "set_voicemail",
    "wait_destination_done",
    "wait_stage",
]

#: The names the PBX dials (``PJSIP/NAME@tester``) to reach each destination.
DESTINATIONS = ("company", "voicemail", "busy", "noanswer", "fail")

#: The spoken prompts: file name in the shared directory (``.wav``) -> sentence.
PROMPTS = {
    "rig-company-menu": "Thank you for calling Acme. For sales, press 1. For support, press 2.",
    "rig-company-invalid": "Sorry, that is not a valid option.",
    "rig-company-sales": "Our sales team is closed today.",
    "rig-company-hold": "All our agents are busy. Please hold.",
    "rig-company-person": "Support, this is Sam. How can I help?",
    "rig-company-bye": "Thank you for calling. Goodbye.",
    "rig-voicemail-greeting": (
        "The person you are calling is not available. Please leave a message after the tone."
    ),
}

#: The hold music (``rig-company-music.wav``, one second): these notes, 250 ms each.
MUSIC_NOTES = (523.0, 659.0, 784.0, 659.0)

#: Every stage a destination reports (``RIG_<ID>_TRAIL``, ``RIG_<ID>_<STAGE>_AT``).
STAGES = (
    *("menu", "invalid", "sales", "hold", "person", "reply"),
    *("greeting", "beep", "record", "bye"),
)

#: Settings each destination reads (``RIG_IN_<NAME>_<KEY>``).
_SETTINGS = {
    "company": ("ID", "RECORD", "MENU_TIMEOUT", "HOLD", "LISTEN", "REPLIES"),
    "voicemail": ("ID", "RECORD", "SILENCE", "MAX"),
}
_PHONE_SETTINGS = (
    *("ID", "RECORD", "RECORD_SENT", "DELAY", "PLAY"),
    *("DTMF", "READ", "READ_TIMEOUT", "WAIT", "ANSWER"),
)
_RESULTS = (
    *("STATE", "CAUSE", "PLAYED", "DIGITS", "TRAIL", "HEARD", "RECORD_STATUS", "END_AT"),
    *(f"{stage.upper()}_AT" for stage in STAGES),
)


def make_prompts(shared_dir: str | Path, *, force: bool = False) -> dict[str, Path]:
    """Write the destinations' prompts into ``shared_dir`` (host path); return them by name.

    Speech comes from espeak-ng (installed if missing, as root); the hold
    music is :data:`MUSIC_NOTES`. Files already there are kept unless ``force``.
    """
    shared = Path(shared_dir)
    out: dict[str, Path] = {}
    for name, text in PROMPTS.items():
        path = shared / f"{name}.wav"
        if force or not path.exists():
            make_speech(path, text)
        out[name] = path
    music = shared / "rig-company-music.wav"
    if force or not music.exists():
        make_tones(music, [(hz, 0.25) for hz in MUSIC_NOTES], amplitude=0.3)
    out["rig-company-music"] = music
    return out


def _fmt(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


async def _configure(
    ari: AriClient, name: str, settings: dict[str, float | str | None], rig_id: str | None
) -> None:
    if rig_id is not None:
        _check_id(rig_id, "rig_id")
    values = {key: settings.get(key) for key in _SETTINGS[name]}
    values["ID"] = rig_id
    for key, value in values.items():
        await ari.set_global(f"RIG_IN_{name}_{key}", "" if value is None else _fmt(value))
    await reset_destination(ari, rig_id or name)


async def set_company(
    ari: AriClient,
    *,
    hold: float | None = None,
    listen: float | None = None,
    replies: tuple[str, ...] | list[str] = (),
    menu_timeout: float | None = None,
    record: str | None = None,
    rig_id: str | None = None,
) -> None:
    """Configure the ``company`` destination (clears earlier settings and results).

    hold: seconds on hold before the person answers (default 6; at least the
        announcement, then whole 1 s pieces of music).
    listen: seconds the person listens after the greeting and after each reply
        (default 10).
    replies: what the person says next, in turn: files inside Asterisk without
        extension (:func:`~controller.devtools.rig.calls.playable`).
    menu_timeout: seconds the menu waits for a digit after its prompt (default 5).
    record: a file inside Asterisk (``.wav``) to record the whole call's audio heard.
    rig_id: the results' id (default ``company``).
    """
    await _configure(
        ari,
        "company",
        {
            "HOLD": hold,
            "LISTEN": listen,
            "REPLIES": "&".join(replies),
            "MENU_TIMEOUT": menu_timeout,
            "RECORD": record,
        },
        rig_id,
    )


async def set_voicemail(
    ari: AriClient,
    *,
    silence: float | None = None,
    max_seconds: float | None = None,
    record: str | None = None,
    rig_id: str | None = None,
) -> None:
    """Configure the ``voicemail`` destination (clears earlier settings and results).

    silence: seconds of silence that end the message (default 3).
    max_seconds: the longest message (default 20).
    record: a file inside Asterisk (``.wav``) to record the whole call's audio heard.
    rig_id: the results' id (default ``voicemail``).
    """
    await _configure(
        ari,
        "voicemail",
        {"SILENCE": silence, "MAX": max_seconds, "RECORD": record},
        rig_id,
    )


async def reset_destination(ari: AriClient, name_or_id: str) -> None:
    """Forget the results of an earlier call to a destination (by its result id).

    For ``busy``, ``noanswer`` and ``fail`` (which take the phone's settings)
    this also clears any ``RIG_IN_<NAME>_*`` a test set for that name.
    """
    _check_id(name_or_id, "name_or_id")
    if name_or_id in ("busy", "noanswer", "fail"):
        for key in _PHONE_SETTINGS:
            await ari.set_global(f"RIG_IN_{name_or_id}_{key}", "")
    for key in _RESULTS:
        await ari.set_global(f"RIG_{name_or_id}_{key}", "")


@dataclass(frozen=True)
class DestinationResult:
    """What a destination reported (empty strings / None for what it did not)."""

    state: str  # ringing, up, done ('' before the call arrives)
    cause: str  # the hang-up cause the destination saw
    digits: str = ""  # company: every digit its menu read
    trail: list[str] = field(default_factory=list)  # the stages, in order
    at: dict[str, float] = field(default_factory=dict)  # stage -> s after the answer (last start)
    end_at: float | None = None  # s from the answer to the hang-up
    heard: str = ""  # the recording (path inside Asterisk)
    played: str = ""  # voicemail: the beep's PLAYBACKSTATUS
    record_status: str = ""  # voicemail: Record()'s RECORD_STATUS


async def destination_result(ari: AriClient, rig_id: str) -> DestinationResult:
    """Read the results of destination ``rig_id`` (``company``, ``voicemail``, ...)."""
    raw = {key: await ari.get_global(f"RIG_{rig_id}_{key}") for key in _RESULTS}
    at = {
        stage: float(raw[f"{stage.upper()}_AT"])
        for stage in STAGES
        if raw[f"{stage.upper()}_AT"] != ""
    }
    return DestinationResult(
        state=raw["STATE"],
        cause=raw["CAUSE"],
        digits=raw["DIGITS"],
        trail=raw["TRAIL"].split(">") if raw["TRAIL"] else [],
        at=at,
        end_at=float(raw["END_AT"]) if raw["END_AT"] else None,
        heard=raw["HEARD"],
        played=raw["PLAYED"],
        record_status=raw["RECORD_STATUS"],
    )


async def wait_destination_done(
    ari: AriClient, rig_id: str, timeout: float = 30.0
) -> DestinationResult:
    """Wait until the call to destination ``rig_id`` has ended there; return its results."""

    async def done() -> bool:
        return await ari.get_global(f"RIG_{rig_id}_STATE") == "done"

    await wait_for(done, timeout, what=f"the call to {rig_id} to end", interval=0.1)
    return await destination_result(ari, rig_id)


async def wait_stage(
    ari: AriClient, rig_id: str, stage: str, *, count: int = 1, timeout: float = 20.0
) -> DestinationResult:
    """Wait until destination ``rig_id`` has begun ``stage`` ``count`` times; return its results."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")

    async def reached() -> bool:
        trail = await ari.get_global(f"RIG_{rig_id}_TRAIL")
        return trail.split(">").count(stage) >= count

    await wait_for(reached, timeout, what=f"{rig_id} to reach {stage} (x{count})", interval=0.05)
    return await destination_result(ari, rig_id)
