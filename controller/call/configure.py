"""How an agent and the settings become a call's conversation and model session (pure).

:func:`conversation_config` is what the conversation core may do;
:func:`session_update` is the ``session.update`` the model session starts
with (the agent's model, voice, turn detection, tools, instructions or stored
prompt, reasoning effort and noise reduction).
"""

from __future__ import annotations

import datetime as dt

from controller.agents import Agent
from controller.call.conversation import ConversationConfig
from controller.call.tools import build_instructions, declarations
from controller.config import Settings
from controller.outbound import OutboundRequest, outbound_instructions
from controller.realtime.events import Prompt, PromptText, SessionUpdate, build_session_update
from controller.templates import DATA_FIELDS, DATA_NOTE, fill_template, uses_fields


def conversation_config(agent: Agent, settings: Settings) -> ConversationConfig:
    """What a call served by ``agent`` may do."""
    return ConversationConfig(
        greeting=agent.greeting,
        dtmf_to_model=agent.dtmf_to_model,
        # MCP servers are called by the API, never as a function of ours.
        tools=frozenset(t for t in agent.tools if t not in agent.mcp_servers),
        transfer_targets=frozenset(agent.transfer_targets),
        http_tools=frozenset(agent.http_tools),
        barge_in_min_ms=settings.barge_in_min_ms,
        protect_greeting=settings.protect_greeting,
        hangup_grace_seconds=settings.hangup_grace_seconds,
        max_call_seconds=settings.max_call_seconds,
        silence_timeout_seconds=settings.silence_timeout_seconds,
        audio_bytes_per_ms=8 if settings.realtime_audio == "pcmu" else 48,
        stall_seconds=settings.realtime_stall_seconds,
        max_tool_calls_per_response=settings.max_tool_calls_per_response,
    )


def outbound_agent(
    agent: Agent, request: OutboundRequest, fields: dict[str, str], settings: Settings
) -> Agent:
    """``agent`` placing ``request``: its brief first, ``report_outcome``, no greeting.

    The far end speaks first (a menu, a person saying hello); the agent waits.
    Turn detection waits at least ``OUTBOUND_VAD_SILENCE_MS`` of silence,
    because phone menus pause between options and an agent that answers every
    pause talks over the menu.
    """
    variables = {**fields, **request.variables}
    brief = outbound_instructions(fill_template(request.purpose, variables), request.variables)
    if uses_fields(request.purpose, DATA_FIELDS - set(request.variables)):
        brief = f"{brief.rstrip()}\n{DATA_NOTE}\n"
    about = agent.instructions.strip()
    instructions = brief + (f"\nAbout you and who you call for:\n{about}\n" if about else "")
    tools = tuple(t for t in agent.tools if t != "report_outcome") + ("report_outcome",)
    silence = max(agent.vad.silence_ms, settings.outbound_vad_silence_ms)
    vad = agent.vad.model_copy(update={"silence_ms": silence})
    # The brief must reach the model, even over a stored prompt's instructions.
    return agent.model_copy(
        update={
            "instructions": instructions,
            "greeting": "",
            "tools": tools,
            "vad": vad,
            "send_instructions": True,
        }
    )


def session_update(
    agent: Agent, settings: Settings, *, interrupt_response: bool, today: dt.date
) -> SessionUpdate:
    """The ``session.update`` of a call served by ``agent``.

    Args:
        agent: the call's agent (its turn detection overrides the settings').
        settings: the controller's settings.
        interrupt_response: let the server interrupt responses itself (see
            :attr:`~controller.call.conversation.Conversation.server_interrupts`).
        today: the date the instructions mention.
    """
    vad = agent.vad
    call_settings = settings.model_copy(
        update={
            "vad_type": vad.type,
            "vad_threshold": vad.threshold,
            "vad_silence_ms": vad.silence_ms,
            "vad_prefix_ms": vad.prefix_ms,
            "vad_eagerness": vad.eagerness,
            "idle_timeout_ms": vad.idle_timeout_ms,
            "realtime_model": agent.model,
            "realtime_reasoning_effort": agent.reasoning_effort,
            "noise_reduction": agent.noise_reduction,
        }
    )
    stored = agent.prompt
    prompt = None
    if stored is not None:
        variables = {k: PromptText(text=v) for k, v in stored.variables.items()}
        prompt = Prompt(id=stored.id, version=stored.version, variables=variables or None)
    return build_session_update(
        call_settings,
        tools=declarations(agent),
        instructions=build_instructions(agent, today),
        voice=agent.voice,
        interrupt_response=interrupt_response,
        prompt=prompt,
        send_instructions=agent.send_instructions,
    )
