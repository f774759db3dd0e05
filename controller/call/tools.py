"""The model's tools: declarations, argument checks, and the instructions text.

Pure: nothing here touches ARI or the network. :mod:`controller.call.call`
performs the actions; this module decides what is allowed. A refused call
raises :class:`~controller.errors.ToolError`, whose message goes back to the
model as the tool's result so it can explain the problem to the caller.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pydantic_core

from controller.agents import Agent, McpServer
from controller.errors import ToolError
from controller.outbound import report_outcome_tool

#: Keys ``POST /channels/{id}/dtmf`` plays: digits, ``*#``, ``A-D``, and
#: ``w`` (a half-second pause, handled by Asterisk's DTMF streamer).
DTMF_KEYS = frozenset("0123456789*#ABCDw")
MAX_DTMF_LENGTH = 32
#: Hang-up reasons the model may give are free text; ARI's reason is fixed.
MAX_REASON_LENGTH = 200
#: Longest ``arguments`` text of a function call that is decoded at all.
MAX_ARGUMENTS_CHARS = 64 * 1024


def validate_dtmf(digits: object) -> str:
    """Normalise and check the digits for ``send_dtmf``.

    Spaces and dashes are dropped (models like ``"1-2-3"``); ``a-d`` are
    upper-cased; ``W`` becomes ``w``.

    Raises:
        ToolError: not a string, empty, too long, or a key a phone cannot send.
    """
    if not isinstance(digits, str):
        raise ToolError("digits must be a string such as '1234#'")
    cleaned = "".join(c for c in digits if c not in " -")
    cleaned = "".join(c.upper() if c in "abcd" else ("w" if c == "W" else c) for c in cleaned)
    if not cleaned:
        raise ToolError("digits is empty; give the keys to press, e.g. '1' or '1234#'")
    if len(cleaned) > MAX_DTMF_LENGTH:
        raise ToolError(f"at most {MAX_DTMF_LENGTH} keys at a time; send the rest in another call")
    bad = sorted({c for c in cleaned if c not in DTMF_KEYS})
    if bad:
        raise ToolError(
            f"cannot press {', '.join(repr(c) for c in bad)}; "
            "allowed keys are 0-9, *, #, A-D and w (half-second pause)"
        )
    return cleaned


def parse_arguments(arguments: str) -> dict[str, Any]:
    """Decode a function call's ``arguments`` (a JSON object in a string).

    The model chooses this text: it is refused beyond :data:`MAX_ARGUMENTS_CHARS`,
    and decoded by pydantic-core, which refuses deep nesting (``json.loads``
    raised ``RecursionError`` on ``[[[[...`` and crashed the call).

    Raises:
        ToolError: the text is too long or is not a JSON object.
    """
    if len(arguments) > MAX_ARGUMENTS_CHARS:
        raise ToolError(f"arguments are longer than {MAX_ARGUMENTS_CHARS} characters")
    try:
        value = pydantic_core.from_json(arguments or "{}", allow_inf_nan=False)
    except ValueError:
        raise ToolError("arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise ToolError("arguments must be a JSON object")
    return value


def declarations(agent: Agent) -> list[dict[str, Any]]:
    """The ``tools`` of ``session.update`` for this agent.

    ``transfer`` is declared only when the agent has transfer targets, and
    its ``target`` is an enum of them, so the model sees what is allowed.
    """
    out: list[dict[str, Any]] = []
    for name in agent.tools:
        if name == "hangup":
            out.append(
                _function(
                    "hangup",
                    "End the call. Say goodbye first; the call ends after your goodbye "
                    "has finished playing.",
                    {"reason": {"type": "string", "description": "why the call is ending"}},
                    [],
                )
            )
        elif name == "send_dtmf":
            out.append(
                _function(
                    "send_dtmf",
                    "Press keys on the phone keypad (DTMF), e.g. to choose an option in a "
                    "phone menu. Use this instead of saying digits aloud.",
                    {
                        "digits": {
                            "type": "string",
                            "description": "keys to press: 0-9 * # A-D; w pauses half a second",
                        }
                    },
                    ["digits"],
                )
            )
        elif name == "transfer" and agent.transfer_targets:
            targets = agent.transfer_targets
            described = "; ".join(
                f"{key}: {t.description}" if t.description else key for key, t in targets.items()
            )
            out.append(
                _function(
                    "transfer",
                    f"Transfer the caller. Allowed targets: {described}. "
                    "Tell the caller before transferring.",
                    {"target": {"type": "string", "enum": sorted(targets)}},
                    ["target"],
                )
            )
        elif name == "report_outcome":
            out.append(report_outcome_tool())
        elif name in agent.http_tools:
            tool = agent.http_tools[name]
            out.append(
                {
                    "type": "function",
                    "name": name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                }
            )
        elif name in agent.mcp_servers:
            out.append(mcp_declaration(name, agent.mcp_servers[name]))
    return out


def mcp_declaration(name: str, server: McpServer) -> dict[str, Any]:
    """The ``mcp`` tool of ``session.update`` for an MCP server of the agents file.

    Approval is never required: nobody on a phone call could give it.
    """
    tool: dict[str, Any] = {
        "type": "mcp",
        "server_label": server.server_label or name,
        "server_url": server.server_url,
        "require_approval": "never",
    }
    if server.description:
        tool["server_description"] = server.description
    if server.allowed_tools is not None:
        tool["allowed_tools"] = list(server.allowed_tools)
    if server.headers:
        tool["headers"] = dict(server.headers)
    return tool


def _function(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


_PHONE_MENU_GUIDE = (
    "On phone menus: listen to the options, then press keys with the send_dtmf tool. "
    "Never say digits aloud to a menu. While on hold or listening to music, stay silent "
    "and wait. When a person answers, speak normally."
)


def build_instructions(agent: Agent, today: dt.date) -> str:
    """The ``instructions`` for ``session.update``.

    The operator's text comes first and unchanged; the date and the phone
    menu guidance (only when ``send_dtmf`` is available) follow it.
    """
    parts = [agent.instructions.strip(), f"Today is {today:%A, %d %B %Y}."]
    if "send_dtmf" in agent.tools:
        parts.append(_PHONE_MENU_GUIDE)
    return "\n\n".join(p for p in parts if p)


def tool_result(ok: bool, **fields: Any) -> str:
    """A ``function_call_output`` payload: a small JSON object."""
    return json.dumps({"ok": ok, **fields}, separators=(",", ":"))
