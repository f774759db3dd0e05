"""Outbound calls to a company and to a voicemail, end to end through the sandbox.

The far end is the rig's "company" (a spoken menu read with ``Read()``, hold
with an announcement and music, then a person who greets and records what
it hears) and its "voicemail" (greeting, beep, ``Record()``). The local model
server plays the agent from a script: silent through the menu, presses 2,
silent on hold, speaks to the person, reports the outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from controller.devtools.modelserver import ModelServer
from controller.devtools.modelserver.script import CallStep, SilentStep, SpeakStep
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import analyse, wait_recording
from controller.devtools.rig.company import (
    make_prompts,
    set_company,
    set_voicemail,
    wait_destination_done,
)
from controller.devtools.rig.sandbox import Sandbox
from tests.e2e.test_outbound import Running, assert_nothing_left
from tests.e2e.test_outbound import outbound as outbound  # noqa: F401 (the fixture)

StartOutbound = Callable[..., Awaitable[Running]]


async def test_the_agent_works_the_menu_waits_on_hold_talks_and_reports_achieved(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, outbound: StartOutbound
) -> None:
    make_prompts(asterisk.shared_dir)
    await set_company(ari, hold=4, listen=6)
    model_server.config.tone_hz = 700.0
    model_server.config.script = (
        SilentStep(ms=3000),  # the menu: listen to all of it
        CallStep("send_dtmf", {"digits": "2"}),
        SilentStep(ms=6000),  # hold: announcement and music
        CallStep(
            "report_outcome",
            {"status": "achieved", "summary": "Order 4711 ships Monday.", "data": {"ref": "A-17"}},
            speak_first=SpeakStep(transcript="Hi Sam, I am calling about order 4711."),
        ),
    )
    # The default turn detection for outbound calls: menus and people pause mid-sentence.
    running = await outbound(OUTBOUND_VAD_SILENCE_MS="900")
    status, reply = await running.post_call(
        endpoint="PJSIP/company@tester", purpose="Ask when order 4711 ships."
    )
    assert status == 202, reply
    result = await wait_destination_done(ari, "company", timeout=60)
    record = await running.ended(reply["id"], timeout=30)

    # The company side: key 2 pressed in the menu, then hold, then the person.
    assert result.digits == "2", result
    assert result.trail[:3] == ["menu", "hold", "person"], result.trail
    # The person heard the agent speak (the model's 700 Hz reply), after the hold.
    heard = analyse(await wait_recording(asterisk.host_path(result.heard)))
    assert heard.active >= 1.0, heard
    # The record: the keys, the words, the tools and the outcome.
    assert [t["name"] for t in record["tool_calls"]] == ["send_dtmf", "report_outcome"], (
        record["end_reason"],
        record["transcript"],
        record["turns"],
    )
    assert {"direction": "agent", "digits": "2"}.items() <= record["dtmf"][0].items()
    agent_lines = [line["text"] for line in record["transcript"] if line["role"] == "agent"]
    assert "Hi Sam, I am calling about order 4711." in agent_lines
    assert (record["result_status"], record["result_data"]) == ("achieved", {"ref": "A-17"})
    assert record["outcome"] == "agent_hung_up" and record["machine"] == ""
    await assert_nothing_left(ari, model_server)


async def test_an_answering_machine_gets_the_message_after_the_beep(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, outbound: StartOutbound
) -> None:
    make_prompts(asterisk.shared_dir)
    await set_voicemail(ari, silence=2, max_seconds=15)
    model_server.config.tone_hz = 700.0
    model_server.config.tone_ms = 2000
    model_server.config.transcript = "Please call Ada back on 555 0100."
    running = await outbound()
    status, reply = await running.post_call(
        endpoint="PJSIP/voicemail@tester",
        purpose="Tell Ada her order is ready.",
        on_machine="leave_message",
        machine_message="Please call Ada back on 555 0100.",
    )
    assert status == 202, reply
    result = await wait_destination_done(ari, "voicemail", timeout=60)
    record = await running.ended(reply["id"], timeout=30)
    assert record["machine"] == "MACHINE", (
        record["end_reason"],
        record["ring_result"],
        record["transcript"],
    )
    assert (record["result_status"], record["outcome"]) == ("voicemail", "agent_hung_up")
    # Record() starts after the beep: the message in it was said after the beep.
    assert result.played == "SUCCESS"  # the beep
    message = analyse(await wait_recording(asterisk.host_path(result.heard)))
    assert message.active >= 1.5, message
    sessions = [s for s in model_server.sessions if s.responses]
    creates = [e for e in sessions[-1].received if e.get("type") == "response.create"]
    assert "Please call Ada back on 555 0100." in creates[-1]["response"]["instructions"]
    await assert_nothing_left(ari, model_server)


async def test_with_hangup_an_answering_machine_hears_nothing(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, outbound: StartOutbound
) -> None:
    make_prompts(asterisk.shared_dir)
    await set_voicemail(ari, silence=2, max_seconds=15)
    running = await outbound()
    status, reply = await running.post_call(
        endpoint="PJSIP/voicemail@tester", purpose="Tell Ada.", on_machine="hangup"
    )
    assert status == 202, reply
    record = await running.ended(reply["id"], timeout=40)
    assert (record["machine"], record["result_status"]) == ("MACHINE", "voicemail")
    assert record["transcript"] == []
    assert not any(s.responses for s in model_server.sessions)  # the agent never spoke
    await assert_nothing_left(ari, model_server)
