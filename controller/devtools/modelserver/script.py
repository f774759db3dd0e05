"""A per-session script for the local model server: what each response does, in order.

A script is a sequence of steps (``ServerConfig.script``; the command's
``--script FILE`` reads it from JSON). Every session starts at its first
step; every response the session produces, whether a caller turn (server
VAD with ``create_response``) or the client's ``response.create`` started
it, takes the current step:

- :class:`SpeakStep`: the usual spoken reply (or the text of a text-only
  response), with an optional transcript, WAV file or tone of its own;
- :class:`CallStep`: a function call, optionally spoken first in the same
  response (as :class:`~.config.ScriptedCall` with ``speak_first``);
- :class:`SilentStep`: a response with no output at all (``response.created``
  then ``response.done``, ``completed``, ``output: []``), for ``turns``
  responses, or for every response until ``ms`` milliseconds of caller audio
  have arrived since the step became current: an agent that waits quietly on
  hold or through a recorded announcement.

A step becomes current when the one before it is used up (the first one when
the session opens). When the script runs out, responses get the configured
reply again. Function calls queued with ``ModelServer.queue_function_call``
go before the script (a queued call uses a response without using a step).

Why there is no "ignore N turns" step: with ``create_response`` true the real
API answers every committed caller turn with a response (``response.created``
... ``response.done``); a model that chooses to say nothing still produces
that response, only without output. ``SilentStep`` is that faithful form.
(With ``create_response`` false no turn starts a response anyway.)

JSON (``--script``): a list; each element an object with one key naming the
step, whose value holds its fields::

    [
      {"silent": {"ms": 4000}},
      {"call": {"name": "send_dtmf", "arguments": {"digits": "2"}}},
      {"silent": {"ms": 6000}},
      {"speak": {"transcript": "Hello Sam, I am calling about order 1234."}},
      {"speak": "Thank you."},
      {"call": {"name": "report_outcome",
                "arguments": {"status": "achieved", "summary": "Ships Monday."},
                "speak_first": {"transcript": "Thanks, goodbye."}}}
    ]

``{"speak": "text"}`` is short for ``{"speak": {"transcript": "text"}}``;
``"speak_first"`` is ``true`` (the usual reply) or a speak step's fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["CallStep", "ScriptStep", "SilentStep", "SpeakStep", "load_script", "parse_script"]


@dataclass(frozen=True)
class SpeakStep:
    """A spoken reply. Unset fields fall back to the server's configuration.

    Attributes:
        transcript: the assistant transcript (and the text of a text-only
            response); default ``ServerConfig.transcript``.
        file: a PCM WAV file to play (any rate; resampled).
        tone_hz: play a tone of this frequency (default ``tone_hz``).
        tone_ms: play a tone this long (default ``tone_ms``).
        Without ``file``, ``tone_hz`` and ``tone_ms`` the configured reply
        (echo, tone or file) plays.
    """

    transcript: str | None = None
    file: str | None = None
    tone_hz: float | None = None
    tone_ms: int | None = None

    def __post_init__(self) -> None:
        for name in ("transcript", "file"):
            if not isinstance(getattr(self, name), str | None):
                raise ValueError(f"{name} must be a string")
        if self.tone_hz is not None and not _is_number(self.tone_hz):
            raise ValueError("tone_hz must be a number")
        if self.tone_ms is not None and not _is_int(self.tone_ms):
            raise ValueError("tone_ms must be an integer")
        if self.file is not None and (self.tone_hz is not None or self.tone_ms is not None):
            raise ValueError("give a file or a tone, not both")
        if self.tone_hz is not None and not 0 < self.tone_hz < 12_000:
            raise ValueError(f"tone_hz must be between 0 and 12000: {self.tone_hz}")
        if self.tone_ms is not None and self.tone_ms < 0:
            raise ValueError(f"tone_ms must be 0 or more: {self.tone_ms}")


@dataclass(frozen=True)
class CallStep:
    """A function call (arguments: a JSON string, or a mapping made into one).

    Attributes:
        name: the function's name.
        arguments: its arguments, sent as they are (a string need not be
            valid JSON: a test may want a model's mistake).
        speak_first: speak before the call in the same response (output items
            0 and 1): ``True`` for the usual reply, or a :class:`SpeakStep`.
            A response cancelled while speaking makes no call (and the step
            is used up all the same, as a queued ``ScriptedCall`` is).
        call_id: the ``call_id`` (default: a new one per response).
    """

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    speak_first: bool | SpeakStep = False
    call_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("name must be a non-empty string")
        if self.call_id is not None and not isinstance(self.call_id, str):
            raise ValueError("call_id must be a string")
        if not isinstance(self.speak_first, bool | SpeakStep):
            raise ValueError("speak_first must be true, false or a speak step")
        if isinstance(self.arguments, Mapping):
            object.__setattr__(self, "arguments", json.dumps(dict(self.arguments)))
        elif not isinstance(self.arguments, str):
            raise ValueError("arguments must be an object or a string")

    @property
    def arguments_json(self) -> str:
        """The arguments as sent (always a string after construction)."""
        return str(self.arguments)


@dataclass(frozen=True)
class SilentStep:
    """Responses without output: ``turns`` of them, or all of them for ``ms``.

    Attributes:
        turns: how many responses this step answers (default 1).
        ms: instead, answer every response until this many milliseconds of
            caller audio (``input_audio_buffer.append``) have arrived since
            the step became current; the first response after that takes the
            next step (a step after a window becomes current where the window
            ends).
    """

    turns: int = 1
    ms: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.turns):
            raise ValueError("turns must be an integer")
        if self.ms is not None and not _is_int(self.ms):
            raise ValueError("ms must be an integer")
        if self.ms is not None:
            if self.turns != 1:
                raise ValueError("give turns or ms, not both")
            if self.ms <= 0:
                raise ValueError(f"ms must be positive: {self.ms}")
        elif self.turns < 1:
            raise ValueError(f"turns must be 1 or more: {self.turns}")


ScriptStep = SpeakStep | CallStep | SilentStep

_KINDS: dict[str, type[SpeakStep] | type[CallStep] | type[SilentStep]] = {
    "speak": SpeakStep,
    "call": CallStep,
    "silent": SilentStep,
}


def _build(cls: type[Any], value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object of fields, got {type(value).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**value)
    except TypeError as exc:  # a missing required field
        raise ValueError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_script(data: Any) -> tuple[ScriptStep, ...]:
    """Script steps from their JSON form (see the module docstring).

    Raises:
        ValueError: the data is not a script; the message says where.
    """
    if not isinstance(data, Sequence) or isinstance(data, str | bytes):
        raise ValueError("a script is a JSON list of steps")
    steps: list[ScriptStep] = []
    for index, element in enumerate(data):
        where = f"step {index}"
        if not isinstance(element, Mapping) or len(element) != 1:
            raise ValueError(
                f"{where}: expected an object with one key ({', '.join(_KINDS)}), got {element!r}"
            )
        ((kind, value),) = element.items()
        if kind not in _KINDS:
            raise ValueError(f"{where}: unknown step {kind!r}; steps: {', '.join(_KINDS)}")
        where = f"step {index} ({kind})"
        if kind == "speak" and isinstance(value, str):
            value = {"transcript": value}
        if kind == "call" and isinstance(value, Mapping):
            speak_first = value.get("speak_first", False)
            if not isinstance(speak_first, bool):
                value = {**value, "speak_first": _build(SpeakStep, speak_first, where)}
        steps.append(_build(_KINDS[kind], value, where))
    return tuple(steps)


def load_script(path: str | Path) -> tuple[ScriptStep, ...]:
    """Read a script from a JSON file.

    Raises:
        ValueError: unreadable, not JSON, or not a script (the message says why).
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    try:
        return parse_script(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
