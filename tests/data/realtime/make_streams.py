"""Write the GA server event streams of newer models, assembled by hand.

* ``preamble_answer.jsonl``: one response with two audio items: a short
  preamble ("One moment.") at output index 0, then the answer at index 1.
* ``preamble_tools.jsonl``: a preamble, then two function calls in the same
  response (parallel tool calls).
* ``mcp_call.jsonl``: an MCP server's tools listed, then a response that calls
  one of them (the API runs it) and speaks the answer after it.
* ``mcp_failures.jsonl``: an MCP server whose tools cannot be listed, then a
  response whose MCP call fails and that ends without a word after it.
* ``idle_timeout.jsonl``: the caller stays quiet past ``idle_timeout_ms``: the
  server commits the empty audio and answers by itself.

Built with plain dicts, independently of the controller and of the local
model server, in the GA order and shape; the tests check every line against
the ``openai`` package's types. Run from the repo root:

    .venv/bin/python tests/data/realtime/make_streams.py
"""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
Event = dict[str, Any]
_ids = itertools.count(1)


def _event(kind: str, **fields: Any) -> Event:
    return {"type": kind, "event_id": f"event_M{next(_ids):05d}", **fields}


def _response(
    response_id: str, status: str = "in_progress", output: list[Event] | None = None
) -> Event:
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": None,
        "output": output or [],
        "conversation_id": "conv_M0000000000000001",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "usage": None
        if status == "in_progress"
        else {
            "total_tokens": 120,
            "input_tokens": 90,
            "output_tokens": 30,
            "input_token_details": {"text_tokens": 60, "audio_tokens": 30, "cached_tokens": 0},
            "output_token_details": {"text_tokens": 10, "audio_tokens": 20},
        },
        "metadata": None,
    }


def _message(item_id: str, status: str, transcript: str | None) -> Event:
    content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def audio_item(
    response_id: str, item_id: str, index: int, previous: str, transcript: str, ms: int
) -> tuple[list[Event], Event]:
    """The events of one assistant audio item (``ms`` of u-law in 100 ms deltas)."""
    ids = {
        "response_id": response_id,
        "item_id": item_id,
        "output_index": index,
        "content_index": 0,
    }
    events = [
        _event(
            "response.output_item.added",
            response_id=response_id,
            output_index=index,
            item=_message(item_id, "in_progress", None),
        ),
        _event(
            "conversation.item.added",
            previous_item_id=previous,
            item=_message(item_id, "in_progress", None),
        ),
        _event("response.content_part.added", **ids, part={"type": "audio", "transcript": ""}),
    ]
    words = transcript.split()
    chunks = ms // 100
    for n in range(chunks):
        if n < len(words):
            delta = words[n] + ("" if n == len(words) - 1 else " ")
            events.append(
                _event(
                    "response.output_audio_transcript.delta", **ids, delta=delta, obfuscation="Zx"
                )
            )
        # 100 ms of u-law: a byte pattern per item, so tests can tell the items apart.
        audio = bytes([0x10 + index]) * 800
        events.append(
            _event(
                "response.output_audio.delta",
                **ids,
                delta=base64.b64encode(audio).decode(),
                obfuscation="aB3",
            )
        )
    done = _message(item_id, "completed", transcript)
    events += [
        _event("response.output_audio.done", **ids),
        _event("response.output_audio_transcript.done", **ids, transcript=transcript),
        _event(
            "response.content_part.done", **ids, part={"type": "audio", "transcript": transcript}
        ),
        _event("response.output_item.done", response_id=response_id, output_index=index, item=done),
        _event("conversation.item.done", previous_item_id=previous, item=done),
    ]
    return events, done


def function_call(
    response_id: str, item_id: str, index: int, previous: str, name: str, call_id: str, args: str
) -> tuple[list[Event], Event]:
    """The events of one function call item."""
    item = {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "name": name,
        "call_id": call_id,
        "arguments": "",
    }
    ids = {"response_id": response_id, "item_id": item_id, "output_index": index}
    done = {**item, "status": "completed", "arguments": args}
    return [
        _event(
            "response.output_item.added", response_id=response_id, output_index=index, item=item
        ),
        _event("conversation.item.added", previous_item_id=previous, item=item),
        _event(
            "response.function_call_arguments.delta",
            **ids,
            call_id=call_id,
            delta=args,
            obfuscation="Qw",
        ),
        _event(
            "response.function_call_arguments.done",
            **ids,
            call_id=call_id,
            name=name,
            arguments=args,
        ),
        _event("response.output_item.done", response_id=response_id, output_index=index, item=done),
        _event("conversation.item.done", previous_item_id=previous, item=done),
    ], done


def mcp_call(
    response_id: str,
    item_id: str,
    index: int,
    previous: str,
    *,
    server: str,
    name: str,
    args: str,
    output: str | None = None,
    error: Event | None = None,
) -> tuple[list[Event], Event]:
    """The events of one MCP call the API makes (``output`` or ``error``)."""
    item = {
        "id": item_id,
        "type": "mcp_call",
        "server_label": server,
        "name": name,
        "arguments": "",
    }
    done = {**item, "arguments": args, "output": output, "error": error}
    ids = {"item_id": item_id, "output_index": index}
    ended = "response.mcp_call.failed" if error else "response.mcp_call.completed"
    return [
        _event(
            "response.output_item.added", response_id=response_id, output_index=index, item=item
        ),
        _event("conversation.item.added", previous_item_id=previous, item=item),
        _event(
            "response.mcp_call_arguments.delta",
            response_id=response_id,
            **ids,
            delta=args,
            obfuscation="Mc",
        ),
        _event("response.mcp_call_arguments.done", response_id=response_id, **ids, arguments=args),
        _event("response.mcp_call.in_progress", **ids),
        _event(ended, **ids),
        _event("response.output_item.done", response_id=response_id, output_index=index, item=done),
        _event("conversation.item.done", previous_item_id=previous, item=done),
    ], done


def list_tools(item_id: str, previous: str, server: str, tools: list[str] | None) -> list[Event]:
    """An MCP server's tools being listed (``None``: the listing fails)."""
    item = {"id": item_id, "type": "mcp_list_tools", "server_label": server, "tools": []}
    events = [
        _event("conversation.item.added", previous_item_id=previous, item=item),
        _event("mcp_list_tools.in_progress", item_id=item_id),
    ]
    if tools is None:
        return [*events, _event("mcp_list_tools.failed", item_id=item_id)]
    listed = [
        {"name": t, "input_schema": {"type": "object", "properties": {}}, "description": t}
        for t in tools
    ]
    return [
        *events,
        _event("mcp_list_tools.completed", item_id=item_id),
        _event("conversation.item.done", previous_item_id=previous, item={**item, "tools": listed}),
    ]


def response(
    response_id: str, parts: list[tuple[list[Event], Event]], status: str = "completed"
) -> list[Event]:
    events = [_event("response.created", response=_response(response_id))]
    for part, _ in parts:
        events += part
    events.append(
        _event("response.done", response=_response(response_id, status, [d for _, d in parts]))
    )
    events.append(
        _event(
            "rate_limits.updated",
            rate_limits=[
                {"name": "tokens", "limit": 40000, "remaining": 39880, "reset_seconds": 0.2}
            ],
        )
    )
    return events


def preamble_answer() -> list[Event]:
    rid = "resp_Mpre0000000000001"
    return response(
        rid,
        [
            audio_item(
                rid, "item_Mpreamble00000001", 0, "item_Mcaller0000000001", "One moment.", 400
            ),
            audio_item(
                rid,
                "item_Manswer000000001",
                1,
                "item_Mpreamble00000001",
                "We open at nine tomorrow and close at six.",
                2000,
            ),
        ],
    )


def preamble_tools() -> list[Event]:
    rid = "resp_Mpar0000000000001"
    return response(
        rid,
        [
            audio_item(
                rid, "item_Mpreamble00000002", 0, "item_Mcaller0000000002", "Let me do that.", 300
            ),
            function_call(
                rid,
                "item_Mdtmf00000000001",
                1,
                "item_Mpreamble00000002",
                "send_dtmf",
                "call_Mdtmf0000000001",
                '{"digits":"9"}',
            ),
            function_call(
                rid,
                "item_Mlookup0000000001",
                2,
                "item_Mdtmf00000000001",
                "lookup_order",
                "call_Mlookup000000001",
                '{"number":"42"}',
            ),
        ],
    )


def mcp_ok() -> list[Event]:
    rid = "resp_Mmcp0000000000001"
    events = list_tools("item_Mlist0000000001", "item_Mcaller0000000003", "crm", ["find_customer"])
    events += response(
        rid,
        [
            mcp_call(
                rid,
                "item_Mmcp00000000001",
                0,
                "item_Mcaller0000000004",
                server="crm",
                name="find_customer",
                args='{"phone":"555"}',
                output='{"name":"Ann Smith","tier":"gold"}',
            ),
            audio_item(rid, "item_Mafter000000001", 1, "item_Mmcp00000000001", "Hello Ann.", 600),
        ],
    )
    return events


def mcp_failures() -> list[Event]:
    rid = "resp_Mmcpfail00000001"
    events = list_tools("item_Mlist0000000002", "item_Mcaller0000000005", "billing", None)
    events += response(
        rid,
        [
            mcp_call(
                rid,
                "item_Mmcpfail0000001",
                0,
                "item_Mcaller0000000006",
                server="crm",
                name="open_ticket",
                args='{"topic":"refund"}',
                error={"type": "http_error", "code": 503, "message": "Service Unavailable"},
            ),
        ],
    )
    return events


def idle_timeout() -> list[Event]:
    rid = "resp_Midle000000000001"
    events = [
        _event(
            "input_audio_buffer.timeout_triggered",
            audio_start_ms=12000,
            audio_end_ms=20000,
            item_id="item_Midle0000000001",
        ),
        _event(
            "input_audio_buffer.committed",
            previous_item_id="item_Manswer000000001",
            item_id="item_Midle0000000001",
        ),
    ]
    events += response(
        rid,
        [
            audio_item(
                rid, "item_Mstill000000001", 0, "item_Midle0000000001", "Are you still there?", 1200
            )
        ],
    )
    return events


def main() -> None:
    for name, events in (
        ("preamble_answer", preamble_answer()),
        ("preamble_tools", preamble_tools()),
        ("mcp_call", mcp_ok()),
        ("mcp_failures", mcp_failures()),
        ("idle_timeout", idle_timeout()),
    ):
        lines = [json.dumps(e, separators=(",", ":")) for e in events]
        (HERE / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
