"""The test rig itself: the sandboxed Asterisk, its dialplan, and the SIP phone side.

These tests need no controller: where the voice agent would be, the test
registers the Stasis app ``voicebot`` itself over ARI.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import numpy as np
import pytest

from asterisk.sandbox import CONF_DIR
from controller.devtools.rig.ari import AriClient, AriEvents
from controller.devtools.rig.audio import (
    analyse,
    band_dbfs,
    frame_frequencies,
    gsm_duration,
    make_silence,
    make_speech,
    make_tone,
    read_wav,
    wait_recording,
    write_wav,
)
from controller.devtools.rig.calls import (
    Script,
    call_pbx,
    playable,
    set_phone_script,
    wait_no_channels,
    wait_rig_done,
)
from controller.devtools.rig.company import (
    MUSIC_NOTES,
    PROMPTS,
    destination_result,
    make_prompts,
    reset_destination,
    set_company,
    set_voicemail,
    wait_destination_done,
    wait_stage,
)
from controller.devtools.rig.sandbox import (
    REQUIRED_MODULES,
    SHARED_DIR_INSIDE,
    Sandbox,
    SandboxError,
    moved_conf,
)
from controller.devtools.rig.wait import wait_for

TONE_SECONDS = 2.0
PROMPT = "/usr/share/asterisk/sounds/en_US_f_Allison/sorry-youre-having-problems.gsm"
BEEP = "/usr/share/asterisk/sounds/en_US_f_Allison/beep.gsm"
#: The Stasis app the outbound tests dial from (where the controller would be).
DIALER = "rig-dialer"


def _sound(box: Sandbox, host_wav: Path) -> str:
    """The ARI media URI (``sound:/path`` without extension) of a shared file."""
    return "sound:" + box.inside_path(host_wav.with_suffix(""))


def _is_pbx_side(event: dict[str, object]) -> bool:
    channel = event.get("channel")
    return isinstance(channel, dict) and str(channel.get("name", "")).startswith("PJSIP/tester-")


# -- the sandbox ----------------------------------------------------------------------


def test_paths_map_between_host_and_sandbox(asterisk: Sandbox) -> None:
    inside = f"{SHARED_DIR_INSIDE}/x.wav"
    assert asterisk.host_path(inside) == asterisk.shared_dir / "x.wav"
    assert asterisk.inside_path(asterisk.shared_dir / "x.wav") == inside
    assert asterisk.host_path("/var/run/asterisk/asterisk.ctl").exists()
    conf = asterisk.host_path("/etc/asterisk/extensions.conf")
    assert conf.read_text() == (CONF_DIR / "extensions.conf").read_text()
    assert asterisk.host_path("/usr/sbin/asterisk").is_file()  # from the read-only root fs
    with pytest.raises(ValueError):
        asterisk.inside_path("/etc/passwd")


def test_asterisk_started_cleanly(asterisk: Sandbox) -> None:
    assert asterisk.running
    assert asterisk.startup_problems == []
    assert "Asterisk Ready" in asterisk.log_path.read_text()
    # Inside Asterisk's mount namespace (paths relative to its chroot): the
    # cached root fs is read-only, the per-run state is bound over it.
    mounts = {}
    for line in Path(f"/proc/{asterisk.pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    assert "ro" in mounts["/"]
    for point in ("/etc/asterisk", "/var/spool/asterisk", "/var/lib/asterisk", "/proc", "/dev"):
        assert point in mounts, sorted(mounts)
        if point.startswith(("/etc", "/var")):
            assert "rw" in mounts[point]


async def test_ari_answers_with_asterisk_22(ari: AriClient) -> None:
    info = await ari.get("/asterisk/info")
    assert re.match(r"22\.\d+", info["system"]["version"]), info["system"]
    assert await ari.get("/asterisk/ping")


async def test_required_modules_are_running(asterisk: Sandbox, ari: AriClient) -> None:
    modules = {m["name"]: m["status"] for m in await ari.get("/asterisk/modules")}
    missing = [name for name in REQUIRED_MODULES if modules.get(name) != "Running"]
    assert not missing, f"not running: {missing}"
    assert "res_ari_channels.so" in asterisk.cli("module show like res_ari_")


async def test_endpoints_and_dialplan_are_loaded(asterisk: Sandbox, ari: AriClient) -> None:
    endpoints = {e["resource"] for e in await ari.get("/endpoints/PJSIP")}
    assert {"tester", "phone"} <= endpoints
    route = asterisk.cli("dialplan show voicebot")
    assert "Stasis(${VOICEBOT_APP},${ARG1},${ARG2})" in route
    assert "STASISSTATUS" in route
    assert "profile=sales" in asterisk.cli("dialplan show 101@from-tester")
    assert await ari.get_global("VOICEBOT_APP") == "voicebot"


def _session_ports(asterisk: Sandbox) -> tuple[int, int, int, int]:
    """The port set the session's sandbox runs on (see controller/devtools/rig/sandbox.py)."""
    offset = int(asterisk.ari_url.rsplit(":", 1)[1]) - 8088
    return 8088 + offset, 5060 + offset, 5070 + offset, 20000 + 5 * offset


def test_second_sandbox_on_the_same_ports_is_refused(asterisk: Sandbox, tmp_path: Path) -> None:
    http = _session_ports(asterisk)[0]
    second = Sandbox(
        tmp_path / "second", extra_conf=moved_conf(*_session_ports(asterisk)), die_with_parent=True
    )
    try:
        with pytest.raises(SandboxError, match=rf"already in use: 127\.0\.0\.1:{http}"):
            second.start()
    finally:
        second.stop()  # never leave an Asterisk behind, even if it started


def test_parallel_sandbox_starts_and_stops_without_leftovers(
    asterisk: Sandbox, tmp_path: Path
) -> None:
    """A second run with its own ports and state; stop leaves no process or mount."""
    extra = moved_conf(8188, 5160, 5170, 20500)
    state = tmp_path / "parallel"
    box = Sandbox(state, extra_conf=extra, die_with_parent=True)
    with box:
        pid = box.pid
        assert pid is not None
        assert box.ari_url == "http://127.0.0.1:8188"
        assert box.ari("GET", "/asterisk/ping")["ping"] == "pong"
        assert box.startup_problems == []
        # Its state is its own: the two AstDBs are different files.
        assert box.host_path("/var/lib/asterisk") != asterisk.host_path("/var/lib/asterisk")
    assert not box.running
    assert not Path(f"/proc/{pid}").exists()
    root = str(state / "root")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                assert not os.readlink(proc / "root").startswith(root), f"pid {proc.name}"
            except OSError:
                pass
    assert root not in Path("/proc/self/mountinfo").read_text()
    assert asterisk.running  # the session's sandbox is untouched


# -- calls -------------------------------------------------------------------------------


async def test_phone_call_reaches_stasis_as_tester_and_hears_the_tone(
    asterisk: Sandbox, ari: AriClient
) -> None:
    tone = make_tone(asterisk.shared_dir / "tone-1k.wav", 1000, TONE_SECONDS)
    heard = asterisk.shared_dir / "heard-stasis.wav"
    async with ari.events("voicebot") as events:
        await call_pbx(
            ari, "100", Script(record=asterisk.inside_path(heard), wait=15), rig_id="stasis"
        )
        start = await events.next("StasisStart", _is_pbx_side)
        channel = start["channel"]
        assert start["args"] == ["100", ""]
        assert channel["caller"]["number"] == "tester"
        assert channel["dialplan"]["exten"] == "s"  # inside Gosub(voicebot,s,1(100))
        tester = await ari.get("/endpoints/PJSIP/tester")
        assert channel["id"] in tester["channel_ids"]
        names = [c["name"] for c in await ari.channels()]
        assert any(n.startswith("PJSIP/phone-") for n in names), names

        await ari.post(f"/channels/{channel['id']}/answer")
        playback = await ari.post(f"/channels/{channel['id']}/play", media=_sound(asterisk, tone))
        await events.next(
            "PlaybackFinished", lambda e: e["playback"]["id"] == playback["id"], timeout=15
        )
        await ari.hangup(channel["id"])
        await events.next("StasisEnd", _is_pbx_side)

    result = await wait_rig_done(ari, "stasis")
    assert result["state"] == "done"
    await wait_no_channels(ari)
    stats = analyse(await wait_recording(heard))
    assert abs(stats.dominant_hz - 1000) < 15, stats
    assert abs(stats.active - TONE_SECONDS) < 0.3, stats
    assert stats.rms_dbfs > -20, stats


async def test_profile_extension_passes_its_argument(ari: AriClient) -> None:
    async with ari.events("voicebot") as events:
        await call_pbx(ari, "101", Script(wait=15), rig_id="profile")
        start = await events.next("StasisStart", _is_pbx_side)
        assert start["args"] == ["101", "profile=sales"]
        await ari.post(f"/channels/{start['channel']['id']}/answer")
        await ari.hangup(start["channel"]["id"])
    result = await wait_rig_done(ari, "profile")
    assert result["state"] == "done"
    await wait_no_channels(ari)


async def test_without_the_app_the_caller_hears_the_sorry_prompt(
    asterisk: Sandbox, ari: AriClient
) -> None:
    apps = [a["name"] for a in await ari.get("/applications")]
    assert "voicebot" not in apps, "a voicebot app is connected; the fallback cannot run"
    heard = asterisk.shared_dir / "heard-fallback.wav"
    await call_pbx(ari, "100", Script(record=asterisk.inside_path(heard), wait=20), rig_id="nobot")
    await wait_rig_done(ari, "nobot", timeout=25)
    await wait_no_channels(ari)
    prompt = gsm_duration(asterisk.host_path(PROMPT))
    stats = analyse(await wait_recording(heard))
    assert abs(stats.duration - prompt) < 0.6, (stats, prompt)
    assert stats.active > prompt / 2, (stats, prompt)
    assert stats.rms_dbfs > -40, stats
    log = asterisk.log_path.read_text()
    assert "Stasis app 'voicebot' unavailable (STASISSTATUS=FAILED)" in log


async def test_echo_returns_what_the_phone_plays(asterisk: Sandbox, ari: AriClient) -> None:
    tone = make_tone(asterisk.shared_dir / "tone-440.wav", 440, TONE_SECONDS)
    heard = asterisk.shared_dir / "heard-echo.wav"
    script = Script(
        record=asterisk.inside_path(heard),
        play=asterisk.inside_path(tone.with_suffix("")),
        wait=0.5,
    )
    await call_pbx(ari, "rig-echo", script, rig_id="echo")
    result = await wait_rig_done(ari, "echo")
    assert result["played"] == "SUCCESS"
    await wait_no_channels(ari)
    stats = analyse(await wait_recording(heard))
    assert abs(stats.dominant_hz - 440) < 10, stats
    assert abs(stats.active - TONE_SECONDS) < 0.4, stats


async def test_pbx_plays_a_shared_file_without_a_controller(
    asterisk: Sandbox, ari: AriClient
) -> None:
    make_tone(asterisk.shared_dir / "tone_600.wav", 600, 1.0)
    heard = asterisk.shared_dir / "heard-play.wav"
    await call_pbx(
        ari, "rig-play-tone_600", Script(record=asterisk.inside_path(heard), wait=10), rig_id="play"
    )
    await wait_rig_done(ari, "play")  # the PBX hangs up after playing
    await wait_no_channels(ari)
    stats = analyse(await wait_recording(heard))
    assert abs(stats.dominant_hz - 600) < 10, stats
    assert abs(stats.active - 1.0) < 0.3, stats


async def test_dtmf_both_ways(ari: AriClient) -> None:
    async with ari.events("voicebot") as events:
        await call_pbx(
            ari, "100", Script(dtmf="123#", read=2, read_timeout=5, wait=1), rig_id="dtmf"
        )
        start = await events.next("StasisStart", _is_pbx_side)
        channel_id = start["channel"]["id"]
        await ari.post(f"/channels/{channel_id}/answer")
        digits = [
            (await events.next("ChannelDtmfReceived", _is_pbx_side))["digit"] for _ in range(4)
        ]
        assert digits == ["1", "2", "3", "#"]
        await ari.post(f"/channels/{channel_id}/dtmf", dtmf="42", between=200)
        result = await wait_rig_done(ari, "dtmf")
        await events.next("StasisEnd", _is_pbx_side)
    assert result["digits"] == "42"
    await wait_no_channels(ari)


async def test_pbx_calls_the_phone(asterisk: Sandbox, ari: AriClient) -> None:
    """Outbound: the PBX dials PJSIP/tester; the rig's phone answers, plays, records."""
    tone_1k = make_tone(asterisk.shared_dir / "tone-1k.wav", 1000, TONE_SECONDS)
    tone_440 = make_tone(asterisk.shared_dir / "tone-440.wav", 440, TONE_SECONDS)
    heard = asterisk.shared_dir / "heard-outbound.wav"
    await set_phone_script(
        ari,
        Script(
            record=asterisk.inside_path(heard),
            play=asterisk.inside_path(tone_440.with_suffix("")),
            wait=10,
        ),
        rig_id="outbound",
    )
    async with ari.events("voicebot") as events:
        await ari.post(
            "/channels", endpoint="PJSIP/tester", app="voicebot", appArgs="outbound", timeout=10
        )
        start = await events.next("StasisStart", _is_pbx_side)
        channel_id = start["channel"]["id"]
        assert start["args"] == ["outbound"]
        assert start["channel"]["state"] == "Up"
        phone = await ari.get("/endpoints/PJSIP/phone")
        assert phone["channel_ids"], "the call did not arrive as endpoint phone"

        # The agent side records what the phone plays, then plays its own tone.
        await ari.post(
            f"/channels/{channel_id}/record",
            name="rig-outbound",
            format="wav",
            maxDurationSeconds=2,
            ifExists="overwrite",
        )
        await events.next("RecordingFinished", timeout=10)
        playback = await ari.post(f"/channels/{channel_id}/play", media=_sound(asterisk, tone_1k))
        await events.next(
            "PlaybackFinished", lambda e: e["playback"]["id"] == playback["id"], timeout=15
        )
        await ari.hangup(channel_id)

    result = await wait_rig_done(ari, "outbound")
    assert result["played"] == "SUCCESS"
    await wait_no_channels(ari)
    agent_heard = asterisk.host_path("/var/spool/asterisk/recording/rig-outbound.wav")
    stats = analyse(await wait_recording(agent_heard))
    assert abs(stats.dominant_hz - 440) < 10, stats
    stats = analyse(await wait_recording(heard))
    assert abs(stats.dominant_hz - 1000) < 15, stats


async def test_busy_phone_rejects_the_pbx_call(ari: AriClient) -> None:
    await set_phone_script(ari, answer="busy", rig_id="busy")
    async with ari.events("voicebot") as events:
        channel = await ari.post(
            "/channels", endpoint="PJSIP/tester", app="voicebot", appArgs="busy", timeout=10
        )
        destroyed = await events.next(
            "ChannelDestroyed", lambda e: e["channel"]["id"] == channel["id"]
        )
    assert destroyed["cause"] == 17, destroyed  # user busy
    assert not events.of_type("StasisStart")
    await wait_no_channels(ari)


# -- outbound destinations (controller/devtools/rig/company.py) ------------------------


@pytest.fixture
def prompts(asterisk: Sandbox, audio_tools: None) -> dict[str, Path]:
    return make_prompts(asterisk.shared_dir)


def _duration(wav: Path) -> float:
    samples, rate = read_wav(wav)
    return len(samples) / rate


async def _dial(ari: AriClient, events: AriEvents, name: str, *, timeout: int = 10) -> str:
    """Originate PJSIP/NAME@tester into the test's Stasis app, as the controller will;
    return the PBX-side channel id once answered."""
    channel = await ari.post(
        "/channels", endpoint=f"PJSIP/{name}@tester", app=DIALER, appArgs=name, timeout=timeout
    )
    start = await events.next("StasisStart", lambda e: e["channel"]["id"] == channel["id"])
    assert start["channel"]["state"] == "Up"
    return str(channel["id"])


async def _play(ari: AriClient, asterisk: Sandbox, channel_id: str, wav: Path) -> None:
    await ari.post(f"/channels/{channel_id}/play", media=_sound(asterisk, wav))


async def test_company_menu_hold_and_person(
    asterisk: Sandbox, ari: AriClient, prompts: dict[str, Path]
) -> None:
    """Press 2, hear the hold announcement and music, then the person hears the agent."""
    agent = make_tone(asterisk.shared_dir / "agent-1k.wav", 1000, 1.0)
    everything = asterisk.shared_dir / "company-all.wav"
    await set_company(ari, hold=4, listen=3, record=asterisk.inside_path(everything))
    async with ari.events(DIALER) as events:
        channel_id = await _dial(ari, events, "company")
        # Record what the agent's side hears (a snoop: the channel stays free for DTMF).
        snoop = await ari.post(f"/channels/{channel_id}/snoop", spy="in", app=DIALER)
        await events.next("StasisStart", lambda e: e["channel"]["id"] == snoop["id"])
        await ari.post(
            f"/channels/{snoop['id']}/record",
            name="rig-company-agent",
            format="wav",
            ifExists="overwrite",
        )
        await wait_stage(ari, "company", "menu")
        await asyncio.sleep(1.0)  # into the menu prompt: the digit cuts it short
        await ari.post(f"/channels/{channel_id}/dtmf", dtmf="2")
        await wait_stage(ari, "company", "hold", timeout=5)
        await wait_stage(ari, "company", "person", timeout=10)
        await asyncio.sleep(_duration(prompts["rig-company-person"]) + 0.3)
        await _play(ari, asterisk, channel_id, agent)  # the agent answers the person
        result = await wait_destination_done(ari, "company", timeout=20)
        await events.next("StasisEnd", lambda e: e["channel"]["id"] == channel_id)
    await wait_no_channels(ari)

    assert result.digits == "2"
    assert result.trail == ["menu", "hold", "person", "bye"]
    assert result.cause == "16"
    assert 1.0 <= result.at["hold"] < 2.0  # the digit, 1 s into the menu
    hold = result.at["person"] - result.at["hold"]
    announcement = _duration(prompts["rig-company-hold"])
    assert 4.0 <= hold < 4.0 + 1.2, (hold, announcement)  # whole 1 s pieces of music
    assert result.at["bye"] - result.at["person"] == pytest.approx(
        _duration(prompts["rig-company-person"]) + 3, abs=0.3
    )
    assert result.end_at is not None and result.end_at > result.at["bye"]

    # The person heard the agent: the tone, from about when it was played.
    assert result.heard == f"{SHARED_DIR_INSIDE}/heard-company-person.wav"
    stats = analyse(await wait_recording(asterisk.host_path(result.heard)))
    assert abs(stats.dominant_hz - 1000) < 15, stats
    assert abs(stats.active - 1.0) < 0.3, stats
    stats = analyse(await wait_recording(everything))
    assert abs(stats.dominant_hz - 1000) < 15, stats

    # The agent's side heard the menu, then the hold music during the hold.
    heard = asterisk.host_path("/var/spool/asterisk/recording/rig-company-agent.wav")
    samples, rate = read_wav(await wait_recording(heard))

    def notes(start: float, end: float) -> int:
        part = samples[int(start * rate) : int(end * rate)]
        freqs = frame_frequencies(part, rate)
        return sum(int(np.min(np.abs(np.asarray(MUSIC_NOTES) - f)) < 8) for f in freqs)

    # (The recording starts a little after the answer, the clock of the times.)
    assert analyse(heard).active > 4.0
    assert notes(result.at["hold"] + announcement - 0.5, result.at["person"] + 0.5) >= 20
    assert notes(0.0, result.at["hold"]) <= 3


@pytest.mark.parametrize(
    ("digits", "trail"),
    [
        ("99", ["menu", "invalid", "menu", "invalid", "bye"]),
        ("91", ["menu", "invalid", "menu", "sales", "bye"]),
    ],
    ids=["invalid-twice", "invalid-then-sales"],
)
async def test_company_menu_repeats_once_after_a_wrong_digit(
    asterisk: Sandbox,
    ari: AriClient,
    prompts: dict[str, Path],
    digits: str,
    trail: list[str],
) -> None:
    await set_company(ari)
    async with ari.events(DIALER) as events:
        channel_id = await _dial(ari, events, "company")
        for count, digit in enumerate(digits, 1):
            await wait_stage(ari, "company", "menu", count=count)
            await asyncio.sleep(0.5)
            await ari.post(f"/channels/{channel_id}/dtmf", dtmf=digit)
        result = await wait_destination_done(ari, "company", timeout=20)
        await events.next("StasisEnd", lambda e: e["channel"]["id"] == channel_id)
    assert result.digits == digits
    assert result.trail == trail
    # Each digit, 0.5 s into a menu, cuts it short; the second menu follows
    # "not a valid option"; the company hangs up after its goodbye.
    invalid = _duration(prompts["rig-company-invalid"])
    assert result.at["menu"] == pytest.approx(0.5 + invalid, abs=0.3)
    assert result.at[trail[-2]] - result.at["menu"] == pytest.approx(0.5, abs=0.3)
    assert result.end_at is not None
    bye = _duration(prompts["rig-company-bye"])
    assert result.end_at - result.at["bye"] == pytest.approx(bye, abs=0.3)
    await wait_no_channels(ari)


async def test_voicemail_records_what_follows_the_beep(
    asterisk: Sandbox, ari: AriClient, prompts: dict[str, Path]
) -> None:
    too_early = make_tone(asterisk.shared_dir / "early-440.wav", 440, 1.0)
    # The message: 1.5 s of tone, then silence (sent as audio: Record() detects
    # silence in the frames it receives, not in their absence).
    tone = make_tone(asterisk.shared_dir / "message-1k.wav", 1000, 1.5)
    silence = make_silence(asterisk.shared_dir / "silence-4s.wav", 4.0)
    tone_samples, rate = read_wav(tone)
    silence_samples, _ = read_wav(silence)
    message = write_wav(
        asterisk.shared_dir / "message.wav", np.concatenate([tone_samples, silence_samples]), rate
    )
    await set_voicemail(ari, silence=2)
    async with ari.events(DIALER) as events:
        channel_id = await _dial(ari, events, "voicemail")
        await _play(ari, asterisk, channel_id, too_early)  # over the greeting: not recorded
        before = await wait_stage(ari, "voicemail", "record", timeout=15)
        await _play(ari, asterisk, channel_id, message)
        result = await wait_destination_done(ari, "voicemail", timeout=20)
        await events.next("StasisEnd", lambda e: e["channel"]["id"] == channel_id)
    await wait_no_channels(ari)

    assert before.trail == ["greeting", "beep", "record"]
    assert result.trail == ["greeting", "beep", "record", "bye"]
    assert result.played == "SUCCESS"  # the beep
    assert result.record_status == "SILENCE"
    greeting = _duration(prompts["rig-voicemail-greeting"])
    assert result.at["beep"] == pytest.approx(greeting, abs=0.3)
    assert result.at["record"] - result.at["beep"] == pytest.approx(
        gsm_duration(asterisk.host_path(BEEP)), abs=0.15
    )
    assert result.heard == f"{SHARED_DIR_INSIDE}/heard-voicemail-message.wav"
    recording = await wait_recording(asterisk.host_path(result.heard))
    stats = analyse(recording)
    assert abs(stats.dominant_hz - 1000) < 15, stats
    assert abs(stats.active - 1.5) < 0.3, stats
    samples, rate = read_wav(recording)
    assert band_dbfs(samples, rate, 440) < -50  # nothing of what was played before the beep
    assert "Please leave a message" in PROMPTS["rig-voicemail-greeting"]


@pytest.mark.parametrize(
    ("name", "cause", "dialstatus", "their_cause"),
    [
        ("busy", 17, "BUSY", "17"),  # 486 Busy Here
        ("fail", 34, "CONGESTION", "34"),  # 503 Service Unavailable
        ("noanswer", 19, "RINGING", "127"),  # we give up (CANCEL) while it rings
    ],
)
async def test_destinations_that_do_not_answer(
    ari: AriClient, name: str, cause: int, dialstatus: str, their_cause: str
) -> None:
    await reset_destination(ari, name)
    async with ari.events(DIALER) as events:
        channel = await ari.post(
            "/channels", endpoint=f"PJSIP/{name}@tester", app=DIALER, appArgs=name, timeout=2
        )
        destroyed = await events.next(
            "ChannelDestroyed", lambda e: e["channel"]["id"] == channel["id"]
        )
    assert destroyed["cause"] == cause, destroyed
    statuses = [e.get("dialstatus") for e in events.of_type("Dial") if e.get("dialstatus")]
    assert statuses == [dialstatus]
    assert not events.of_type("StasisStart")
    result = await wait_destination_done(ari, name, timeout=5)
    assert (result.cause, result.trail) == (their_cause, [])
    await wait_no_channels(ari)


async def test_amd_tells_the_voicemail_from_a_person(
    asterisk: Sandbox, ari: AriClient, prompts: dict[str, Path]
) -> None:
    """AMD() on the answered call, as an outbound dialplan runs it before Stasis."""
    hello = make_speech(asterisk.shared_dir / "hello-spoken.wav", "Hello?")
    spoken, rate = read_wav(hello)
    # Silence as audio after the word: AMD measures it in the frames it receives.
    hello = write_wav(
        asterisk.shared_dir / "hello.wav", np.concatenate([spoken, np.zeros(2 * rate)]), rate
    )
    await set_voicemail(ari)
    await set_phone_script(ari, Script(play=playable(asterisk, hello), wait=5), name="sam")
    for target, expected in (("voicemail", "MACHINE"), ("sam", "HUMAN")):
        await ari.set_global(f"RIG_amd_{target}_AMDSTATUS", "")
        await ari.post(
            "/channels",
            {"variables": {"RIG_AMD_ID": f"amd_{target}"}},
            endpoint=f"PJSIP/{target}@tester",
            context="rig-pbx",
            extension="rig-amd",
            priority=1,
            timeout=10,
        )

        async def status(target: str = target) -> str:
            return await ari.get_global(f"RIG_amd_{target}_AMDSTATUS")

        assert await wait_for(status, 10, what=f"AMD on {target}") == expected
        cause = await ari.get_global(f"RIG_amd_{target}_AMDCAUSE")
        assert cause.startswith("MAXWORDS" if expected == "MACHINE" else "HUMAN"), cause
        await wait_no_channels(ari, 15)
    assert (await destination_result(ari, "voicemail")).trail[:1] == ["greeting"]


async def test_wait_for_reports_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="the impossible"):
        await wait_for(lambda: False, 0.1, what="the impossible")
    assert await wait_for(lambda: 42, 0.1) == 42
