"""``ari-realtime demo``: one real call through the whole product, then stop.

It starts the sandboxed Asterisk 22 (``asterisk.sandbox``, so it runs from a
clone of the repository, as ``make demo`` does, and needs root), the local
model server (a test peer that answers with a recorded sentence; it is not a
model), and the controller. The rig's phone then places a real PJSIP call to
extension 100 and says a sentence made with espeak-ng. The demo prints the
turns with their timings and writes what the caller heard to
``demo-out/caller-heard.wav`` in the clone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

from controller.app import Controller
from controller.call.call import Call
from controller.call.services import CallContext, CallServices
from controller.config import load_settings
from controller.errors import ConfigError
from controller.logs import setup_logging
from controller.records import CallRecord, LiveEventKind
from controller.serve import Operations
from controller.timeline import timeline_svg

CALLER_TEXT = "Hello! Could you tell me when your shop opens tomorrow?"
AGENT_TEXT = "Good morning! We open at nine tomorrow. Is there anything else?"


def _say(text: str, path: Path, *, voice: str = "en-us", speed: int = 150) -> None:
    """espeak-ng -> 8 kHz mono 16-bit WAV (what the phone plays)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path)],
        check=True,
        capture_output=True,
    )
    raw.unlink()


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return float(w.getnframes()) / float(w.getframerate())


def _active_seconds(path: Path) -> float:
    """Seconds of the recording louder than -40 dBFS (20 ms frames)."""
    import numpy as np

    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    frame = rate // 50
    usable = len(data) // frame * frame
    if not usable:
        return 0.0
    frames = data[:usable].reshape(-1, frame).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1)) / 32768.0
    return float((rms > 10 ** (-40 / 20)).sum() * 0.02)


async def _demo() -> int:
    try:
        # From a clone the repository root is on sys.path (``make demo`` runs
        # ``python -m controller demo`` there); an installed copy has no asterisk/.
        import asterisk.sandbox as sandbox_mod
        from controller.devtools.rig.sandbox import start_sandbox
    except ModuleNotFoundError as exc:
        if exc.name not in ("asterisk", "asterisk.sandbox"):
            raise
        print(
            "demo: the demo runs from a clone of the repository: run `make demo` there",
            file=sys.stderr,
        )
        return 1
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"demo: {tool} is missing; run `make demo` (it installs it)", file=sys.stderr)
            return 1
    from controller.devtools.modelserver import ModelServer, ServerConfig

    out = sandbox_mod.CONF_DIR.parent / "demo-out"  # asterisk/ is at the clone's root
    out.mkdir(exist_ok=True)
    caller_wav, agent_wav = out / "caller-says.wav", out / "agent-says.wav"
    _say(CALLER_TEXT, caller_wav)
    _say(AGENT_TEXT, agent_wav, voice="en-gb")
    print(f"demo: the caller will say: {CALLER_TEXT!r} ({_wav_seconds(caller_wav):.1f} s)")

    if sandbox_mod.rootfs_ready():
        print("demo: starting the sandboxed Asterisk")
    else:
        print(
            "demo: building the sandboxed Asterisk's root file system (first run: about a minute)"
        )
    try:
        # The first free set of ports: a PBX (or another sandbox) on 5060/8088
        # does not stop the demo.
        box = start_sandbox(Path("/var/tmp/ari-realtime/demo"))
    except sandbox_mod.SandboxError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    server = ModelServer(
        ServerConfig(
            reply="file",
            reply_file=str(agent_wav),
            transcript=AGENT_TEXT,
            input_transcript=CALLER_TEXT,
        )
    )
    print(
        "demo: the model is the local test peer (it plays a recorded sentence and "
        "speaks the GA protocol); it is not a real model"
    )
    calls: list[Call] = []
    ended: list[CallRecord] = []
    try:
        await server.start()
        shared = Path(box.shared_dir)
        shutil.copy(caller_wav, shared / "caller-says.wav")
        heard_inside = box.inside_path(shared / "caller-heard.wav")
        settings = load_settings(
            ARI_URL=box.ari_url,
            ARI_USER=box.ari_user,
            ARI_PASSWORD=box.ari_password,
            REALTIME_URL=server.url,
            OPENAI_API_KEY="sk-demo-local-model-server",
            MEDIA_PORTS="41900-41999",
            DATABASE_URL=f"sqlite://{out.resolve()}/calls.db",
            HTTP_LISTEN="",
        )

        def factory(context: CallContext, services: CallServices) -> Call:
            call = Call(context, services)
            calls.append(call)
            return call

        ops = await Operations.open(settings)
        ops.observers.add(_Collect(ended))
        controller = Controller(
            settings,
            call_factory=factory,
            observers=ops.observers,
            cost=ops.pricing,
            model_errors=ops.metrics.model_error,
        )
        await ops.start(controller)
        task = asyncio.create_task(controller.run())
        await asyncio.wait_for(controller.ready.wait(), 10)
        print(f"demo: controller registered Stasis app {settings.ari_app!r}; calling 100 over SIP")
        t0 = time.monotonic()
        await controller.ari.originate(
            endpoint="PJSIP/100@phone",
            context="rig-caller",
            extension="s",
            priority=1,
            variables={
                "RIG_ID": "demo",
                "RIG_DELAY": "1",
                "RIG_PLAY": box.inside_path(shared / "caller-says"),
                "RIG_RECORD": heard_inside,
                "RIG_WAIT": "7",
            },
        )
        while time.monotonic() - t0 < 60:
            await asyncio.sleep(0.2)
            if calls and not controller.calls and not await controller.ari.list_channels():
                break
        controller.request_stop()
        await asyncio.wait_for(task, 20)
        await ops.close()
        _report(calls, ended, server, shared / "caller-heard.wav", out, time.monotonic() - t0)
        return 0 if calls and calls[0].transcript else 1
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
        box.stop()


class _Collect:
    """Keeps each call's final record (a call observer)."""

    def __init__(self, ended: list[CallRecord]) -> None:
        self.ended = ended

    def call_started(self, record: CallRecord) -> None:
        """Nothing to do."""

    def call_event(self, call_id: str, kind: LiveEventKind, data: dict[str, Any]) -> None:
        """Nothing to do."""

    def call_ended(self, record: CallRecord) -> None:
        """Keep it."""
        self.ended.append(record)


def _report(
    calls: list[Call], ended: list[CallRecord], server: Any, heard: Path, out: Path, wall: float
) -> None:
    print()
    if not calls:
        print("demo: no call reached the controller (see the log lines above)")
        return
    call = calls[0]
    print(f"call {call.call_id}: {call.end_reason} after {call.elapsed:.1f} s")
    for line in call.transcript:
        print(f"  t={line.at:5.2f}s  {line.role:>6}: {line.text}")
    for session in server.sessions:
        for turn in session.turns:
            print(
                f"  model heard a turn of {turn.audio_ms / 1000:.2f} s at {turn.rms_dbfs:.0f} dBFS"
            )
    for record in ended:
        for turn in record.turns:
            if turn.caller_stopped_ms is None:
                continue
            stopped = turn.caller_stopped_ms / 1000
            print(
                f"  turn {turn.index}: from the model's speech_stopped at {stopped:.2f} s: "
                f"response {turn.response_latency_ms} ms, first audio "
                f"{turn.first_audio_latency_ms} ms, first frame to the caller "
                f"{turn.first_frame_latency_ms} ms"
            )
        usage = record.usage
        print(
            f"  cost: ${record.cost_usd:.4f} at {record.model}'s list prices for "
            f"{usage.input_audio_tokens} audio tokens in, {usage.output_audio_tokens} out "
            "(the test peer reports usage like the real API)"
        )
        picture = out / "timeline.svg"
        picture.write_text(timeline_svg(record), encoding="utf-8")
        print(f"timeline: {picture}")
        database = f"sqlite://{(out / 'calls.db').resolve()}"
        print(f"record: DATABASE_URL={database} .venv/bin/ari-realtime calls show {record.id}")
    if heard.is_file():
        out.mkdir(exist_ok=True)
        target = out / "caller-heard.wav"
        shutil.copy(heard, target)
        print(
            f"caller-side recording: {target} ({_wav_seconds(target):.1f} s, "
            f"{_active_seconds(target):.1f} s of it audible)"
        )
    print(f"demo finished in {wall:.1f} s")


def main(env_file: str | None = None) -> int:
    """Run the demo; returns the exit code."""
    del env_file  # the demo wires its own settings to the sandbox
    setup_logging("INFO")
    logging.getLogger("controller.devtools.modelserver").setLevel(logging.WARNING)
    try:
        return asyncio.run(_demo())
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
