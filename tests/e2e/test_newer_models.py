"""Newer models end to end: a preamble and its answer in one response (barge-in during the
answer), MCP servers (tools listed, a call that works, one that fails), and the idle timeout
next to SILENCE_TIMEOUT_SECONDS.

Real calls through the sandboxed Asterisk, as in ``test_conversation.py``: the rig's
phone dials the PBX, the in-process controller serves it, the local model server
answers (every client event validated against the ``openai`` package's types by the
``model_server`` fixture). What the caller heard is asserted on the phone's recording.
"""

from __future__ import annotations

import json
import time

import pytest

from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import make_silence, tone_spans
from controller.devtools.rig.calls import (
    Script,
    call_pbx,
    playable,
    wait_nothing_left,
    wait_rig_done,
)
from controller.devtools.rig.sandbox import Sandbox
from tests.e2e.test_conversation import (
    CALLER_HZ,
    LATER_HZ,
    StartController,
    client_events,
    ended_call,
    heard,
    heard_tone,
    make_utterance,
    only,
    shared_file,
)

PREAMBLE_HZ = 800.0  # a multiple of 200 Hz: no leak into the others in 5 ms frames
ANSWER_HZ = 1000.0


async def test_a_barge_in_during_the_answer_truncates_the_answer_not_the_preamble(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
) -> None:
    config = model_server.config
    config.preamble_ms, config.preamble_hz = 400, PREAMBLE_HZ
    config.preamble_transcript = "One moment."
    config.tone_hz, config.tone_ms, config.transcript = ANSWER_HZ, 4000, "The long answer."
    running = await start_controller(AGENT_GREETING="Hello.")
    delay = 2.5  # the greeting's answer plays from about 1 s: the caller talks over it
    speech = make_utterance(
        asterisk.shared_dir / "preamble-speech.wav", CALLER_HZ, 1.2, after=delay, then=2.5
    )
    heard_path, heard_inside = shared_file(asterisk, "preamble-heard")
    sent_path, sent_inside = shared_file(asterisk, "preamble-sent")
    await call_pbx(
        ari,
        "100",
        Script(
            record=heard_inside, record_sent=sent_inside, play=playable(asterisk, speech), wait=0.5
        ),
        rig_id="preamble",
    )
    record = await model_server.wait_for_session(timeout=10)
    await model_server.wait_for(lambda: record.truncates, timeout=10)
    config.tone_hz = LATER_HZ  # the reply to the caller's turn sounds different
    await wait_rig_done(ari, "preamble", timeout=20)
    call = await ended_call(running)
    await wait_nothing_left(ari)

    greeting = record.responses[0]
    assert greeting.preamble_item_id is not None
    # Both items were sent before the caller spoke (the model is faster than real time).
    assert (greeting.status, greeting.preamble_ms_sent, greeting.audio_ms_sent) == (
        "completed",
        400,
        4000,
    )
    samples, rate = await heard(heard_path)
    sent, sent_rate = await heard(sent_path)
    # (The reply to the caller's turn has a preamble too: the first span is the greeting's.)
    preamble_start, preamble_stop = tone_spans(samples, rate, PREAMBLE_HZ)[0]
    answer = heard_tone(samples, rate, ANSWER_HZ, "answer")
    caller_start, _ = only(tone_spans(sent, sent_rate, CALLER_HZ), "caller utterance")
    # The preamble played whole (to a frame), then the answer, without a gap.
    assert abs(preamble_stop - preamble_start - 0.4) <= 0.025, (preamble_start, preamble_stop)
    assert abs(answer.start - preamble_stop) <= 0.03, (preamble_stop, answer)
    assert answer.start < caller_start < answer.stop + 0.1

    # Exactly one truncate: the answer, to what the caller heard of it.
    (truncate,) = record.truncates
    assert truncate["item_id"] == greeting.item_id != greeting.preamble_item_id
    heard_ms = answer.seconds * 1000
    assert abs(truncate["audio_end_ms"] - heard_ms) <= 40, (truncate, heard_ms)
    assert truncate["audio_end_ms"] < truncate["audio_ms"] == 4000
    assert call.truncations == 1 and record.errors == []
    # Nothing of the answer after the cut (tone_spans leaves out the few-ms splatter
    # where the later reply's tones start and stop abruptly).
    assert answer.stop < caller_start + 0.3, (answer, caller_start)
    assert len(samples) / rate > answer.start + 4.2  # the recording runs past its full end

    # The record: one turn (its first audio is the preamble's), one line per item,
    # the answer's line as long as it was heard.
    facts = call.record(final=True)
    assert facts.turns[0].barge_in
    agent_lines = [t for t in facts.transcript if t.role == "agent"]
    assert [t.text for t in agent_lines[:2]] == ["One moment.", "The long answer."]
    first, second = agent_lines[:2]
    assert first.end_ms is not None and second.end_ms is not None
    assert abs((first.end_ms - first.start_ms) - 400) <= 40, first
    assert abs((second.end_ms - second.start_ms) - heard_ms) <= 60, (second, heard_ms)
    print(
        f"preamble {preamble_stop - preamble_start:.3f} s, answer heard {heard_ms:.0f} ms, "
        f"truncate audio_end_ms={truncate['audio_end_ms']}"
    )


async def test_mcp_tools_are_listed_called_and_a_failure_is_told_to_the_model(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E2E_CRM_AUTHORIZATION", "Bearer e2e-crm-token")
    agents = tmp_path / "agents.toml"
    agents.write_text(
        """
[tools.crm]
type = "mcp"
server_url = "https://crm.example/mcp"
allowed_tools = ["find_customer", "open_ticket"]
headers_from_env = { Authorization = "E2E_CRM_AUTHORIZATION" }

[tools.billing]
type = "mcp"
server_url = "https://billing.example/mcp"

[profiles.default]
tools = ["hangup", "crm", "billing"]
"""
    )
    config = model_server.config
    config.mcp_tools = {"crm": ["find_customer", "open_ticket"]}  # billing: unreachable
    config.tone_ms = 800
    # The greeting's response calls find_customer, then speaks; the caller's turn
    # gets a response whose open_ticket call fails and that says nothing after it.
    model_server.queue_mcp_call("crm", "find_customer", {"phone": "tester"}, output={"name": "Ann"})
    model_server.queue_mcp_call(
        "crm", "open_ticket", {"topic": "refund"}, error="Service Unavailable"
    )
    running = await start_controller(AGENTS_FILE=str(agents), AGENT_GREETING="Hello.")
    speech = make_utterance(
        asterisk.shared_dir / "mcp-speech.wav", CALLER_HZ, 1.0, after=3.0, then=5.0
    )
    await call_pbx(ari, "100", Script(play=playable(asterisk, speech), wait=0.5), rig_id="mcp")
    record = await model_server.wait_for_session(timeout=10)
    await wait_rig_done(ari, "mcp", timeout=25)
    call = await ended_call(running)
    await wait_nothing_left(ari)

    # The servers went to the session with their header from the environment,
    # and approval never required.
    tools = {t["server_label"]: t for t in record.session_updates[0]["tools"] if t["type"] == "mcp"}
    assert tools["crm"]["headers"] == {"Authorization": "Bearer e2e-crm-token"}
    assert tools["crm"]["allowed_tools"] == ["find_customer", "open_ticket"]
    assert {t["require_approval"] for t in tools.values()} == {"never"}

    # Both failures were told to the model; the call's failure got it to speak.
    notices = [
        part["text"]
        for item in record.items_created
        if item["type"] == "message" and item["role"] == "system"
        for part in item["content"]
    ]
    assert any("tools of billing are not available" in n for n in notices), notices
    assert any("open_ticket of crm failed: Service Unavailable" in n for n in notices), notices
    types = [e["type"] for e in client_events(record)]
    failed_at = next(
        i
        for i, e in enumerate(client_events(record))
        if e["type"] == "conversation.item.create" and "open_ticket" in json.dumps(e)
    )
    assert types[failed_at + 1] == "response.create"
    assert [r.kind for r in record.responses] == ["audio", "mcp_call", "audio"]
    assert record.responses[-1].status == "completed"  # spoken after the failure

    # Recorded like other tool calls; the call went on until the caller hung up.
    facts = call.record(final=True)
    entries = {t.name: t for t in facts.tool_calls}
    assert set(entries) == {
        "crm.mcp_list_tools",
        "billing.mcp_list_tools",
        "crm.find_customer",
        "crm.open_ticket",
    }
    assert json.loads(entries["crm.mcp_list_tools"].result)["tools"] == [
        "find_customer",
        "open_ticket",
    ]
    assert entries["billing.mcp_list_tools"].refused
    assert entries["crm.find_customer"].arguments == {"phone": "tester"}
    assert json.loads(entries["crm.find_customer"].result) == {"name": "Ann"}
    assert not entries["crm.find_customer"].refused
    assert entries["crm.open_ticket"].refused
    assert facts.outcome == "caller_hung_up"
    assert record.errors == []


async def test_the_idle_timeout_prompts_the_caller_and_the_silence_limit_still_ends_the_call(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
) -> None:
    config = model_server.config
    config.tone_hz, config.tone_ms = 700.0, 1000  # the greeting
    running = await start_controller(
        AGENT_GREETING="Hello.", IDLE_TIMEOUT_MS="5000", SILENCE_TIMEOUT_SECONDS="8"
    )
    silence = make_silence(asterisk.shared_dir / "idle-silence-20s.wav", 20.0)
    heard_path, heard_inside = shared_file(asterisk, "idle-heard")
    started = time.monotonic()
    await call_pbx(
        ari,
        "100",
        Script(record=heard_inside, play=playable(asterisk, silence), wait=1),
        rig_id="idle",
    )
    record = await model_server.wait_for_session(timeout=10)
    await model_server.wait_for(
        lambda: record.responses and record.responses[0].status == "completed", timeout=10
    )
    config.tone_hz = 900.0  # the prompt, then the goodbye
    await wait_rig_done(ari, "idle", timeout=30)
    call = await ended_call(running)
    await wait_nothing_left(ari)
    assert time.monotonic() - started < 18  # well before the phone's own 21 s

    session = record.session_updates[0]
    assert session["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 5000
    # The server answered the timeout itself: the controller asked for nothing more
    # than the greeting and, at the silence limit, the goodbye.
    assert record.idle_timeouts == 1
    creates = [e for e in client_events(record) if e["type"] == "response.create"]
    assert len(creates) == 2 and "goodbye" in creates[1]["response"]["instructions"]
    assert [r.trigger for r in record.responses] == [
        "response.create",
        "idle_timeout",
        "response.create",
    ]
    # "Are you still there?" did not count as activity: the call ended at the limit.
    assert call.end_reason == "nobody spoke for 8s"
    samples, rate = await heard(heard_path)
    greeting = heard_tone(samples, rate, 700.0, "greeting")
    prompt_and_goodbye = tone_spans(samples, rate, 900.0)
    assert len(prompt_and_goodbye) == 2, prompt_and_goodbye
    prompt_start = prompt_and_goodbye[0][0]
    # The prompt came about 5 s after the greeting had played.
    assert 4.5 < prompt_start - greeting.stop < 6.0, (greeting, prompt_start)
    print(
        f"idle timeout: greeting ended {greeting.stop:.2f} s, prompt at {prompt_start:.2f} s, "
        f"goodbye at {prompt_and_goodbye[1][0]:.2f} s"
    )
