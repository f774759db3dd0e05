"""Turn latency end to end: the caller stops speaking -> the first reply sample they hear.

Prints numbers only (no asserts). Measured on real SIP calls through the
sandboxed Asterisk 22, from the caller's own recordings, for each system
under test in the same run:

* ``naive``: a minimal asyncio relay built into this file (``--serve-naive``):
  each RTP payload from Asterisk goes to the model as its own
  ``input_audio_buffer.append`` the moment it arrives, and each model delta's
  frames go out at once, the first immediately and the rest every 20 ms
  (simple pacing from the first frame's time). pcmu only. It is the floor: it
  adds nothing a relay could avoid.
* ``pcmu`` / ``pcm24k``: the controller (``python -m controller run``) with
  ``REALTIME_AUDIO`` set to that mode.

Each runs in its own process; the local model server (a tone replier whose
energy VAD ends a turn after exactly ``--silence-ms`` of silence in the audio
it receives, the ``silence_duration_ms`` every system asks for) runs in
another. The rig's phone dials extension 100 and plays a file: silence, then
``--turns`` times a 0.8 s tone ("the caller speaks") and 2.2 s of silence;
the model answers each turn with a 0.6 s tone. The phone records what it
sends (MixMonitor ``t()``) and what it hears (``r()``); the two files share
one timeline. Per turn:

    latency = start of the reply tone on r() - end of the caller's tone on t()

It includes ``--silence-ms`` (the model waiting for the end of the turn),
the 20 ms packetisation of the caller's audio, Asterisk's path both ways and
whatever the system under test adds: ``added`` = latency - silence. The
recordings' own alignment is good to about one 20 ms frame (Asterisk's
audiohook pairs the two directions and resyncs them when the agent starts
talking after a pause), so compare the systems with each other, in the same
run: ``vs naive`` is the difference of the medians. Also printed per system:
its CPU per call-second (its process, from /proc, idle subtracted) and its
RSS at start and at its peak.

    .venv/bin/python bench/bench_latency.py [--quick] [--systems naive,pcmu,pcm24k]

A controller system may name its event loop (``EVENT_LOOP``), to compare
them in one run: ``--systems naive,pcmu+uvloop,pcmu+asyncio``.
        [--calls 4] [--turns 12] [--silence-ms 300]

``--quick``: controller pcmu only, one call of three turns (a smoke test of
a few seconds with rough numbers). Needs root (the sandbox) and the cached
Asterisk root fs (built on first use).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import (  # noqa: E402
    loadavg,
    percentile,
    proc_cpu,
    proc_memory,
    start_logged,
    start_model_server,
    start_sandbox_patiently,
    stop_process,
    wait_for_line,
)

from controller.audio.g711 import ulaw_decode, ulaw_encode  # noqa: E402
from controller.devtools.rig.ari import AriClient, AriError, AriEvents  # noqa: E402
from controller.devtools.rig.calls import wait_no_channels  # noqa: E402
from controller.devtools.rig.sandbox import Sandbox, SandboxError  # noqa: E402

#: The caller "speaking" and the agent replying.
CALLER_HZ = 400.0
REPLY_HZ = 1000.0
FRAME_S = 0.020
SAMPLES_PER_FRAME = 160
#: The caller's turn: a tone of 0.8 s and a fraction of a frame, then silence, every 3 s.
TONE_S = 0.8
CYCLE_S = 3.0
CALLER_PAUSE_S = CYCLE_S - TONE_S
LEAD_S = 1.0
REPLY_MS = 600
#: A reply sample this loud (-30 dBFS) is heard.
LOUD = 1036
#: UDP ports the systems under test bind for RTP (Asterisk's own are 20000-23999).
MEDIA_PORTS = "44000-44999"
#: Linux's SO_TIMESTAMPNS (not in Python's socket module): kernel receive timestamps.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: The Stasis app of the callers' own channels.
CALLER_APP = "latbench"
DEFAULT_STATE = Path("/var/tmp/ari-realtime/bench-latency")
SYSTEMS = ("naive", "pcmu", "pcm24k")


# --- the naive relay (run in its own process with --serve-naive) ----------------------------


class NaiveCall:
    """One call of the naive relay: externalMedia RTP <-> one model websocket."""

    def __init__(self, relay: NaiveRelay, channel_id: str) -> None:
        self.relay = relay
        self.channel_id = channel_id
        self.em_id = f"naive-em-{channel_id}"
        self.bridge_id = f"naive-br-{channel_id}"
        self.em_started = asyncio.Event()
        self.ended = asyncio.Event()
        self.remote: tuple[str, int] | None = None
        self.sock: socket.socket | None = None
        self.to_model: asyncio.Queue[str] = asyncio.Queue()
        self.out = bytearray()
        self.pacer: asyncio.Task[None] | None = None
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)

    async def run(self) -> None:
        import websockets

        relay = self.relay
        loop = asyncio.get_running_loop()
        http = relay.http
        try:
            await relay.post(f"/channels/{self.channel_id}/answer")
            sock = self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((relay.media_address, 0))
            loop.add_reader(sock.fileno(), self.readable)
            port = sock.getsockname()[1]
            ws = await websockets.connect(
                relay.model_url + "?model=gpt-realtime",
                additional_headers={"Authorization": "Bearer sk-bench-naive"},
                compression=None,
                max_size=None,
            )
            await ws.send(json.dumps(relay.session_update()))
            await relay.post("/bridges", type="mixing", bridgeId=self.bridge_id)
            em = await relay.post(
                "/channels/externalMedia",
                app=relay.app,
                external_host=f"{relay.media_address}:{port}",
                format="ulaw",
                channelId=self.em_id,
            )
            variables = em.get("channelvars") or {}
            self.remote = (
                str(variables["UNICASTRTP_LOCAL_ADDRESS"]),
                int(variables["UNICASTRTP_LOCAL_PORT"]),
            )
            await asyncio.wait_for(self.em_started.wait(), 5)
            await relay.post(
                f"/bridges/{self.bridge_id}/addChannel", channel=f"{self.channel_id},{self.em_id}"
            )
            async with asyncio.TaskGroup() as tasks:
                sender = tasks.create_task(self.send_to_model(ws))
                receiver = tasks.create_task(self.receive_from_model(ws))
                await self.ended.wait()
                sender.cancel()
                receiver.cancel()
            await ws.close()
        finally:
            if self.pacer is not None:
                self.pacer.cancel()
            if self.sock is not None:
                loop.remove_reader(self.sock.fileno())
                self.sock.close()
            with contextlib.suppress(Exception):
                await http.delete(f"{relay.base}/channels/{self.em_id}")
            with contextlib.suppress(Exception):
                await http.delete(f"{relay.base}/bridges/{self.bridge_id}")
            with contextlib.suppress(Exception):
                await http.delete(f"{relay.base}/channels/{self.channel_id}")

    def readable(self) -> None:
        sock = self.sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) > 12:
                # Each payload, as it arrives: one append per RTP packet.
                b64 = base64.b64encode(data[12:]).decode()
                self.to_model.put_nowait(
                    '{"type":"input_audio_buffer.append","audio":"' + b64 + '"}'
                )

    async def send_to_model(self, ws: Any) -> None:
        while True:
            await ws.send(await self.to_model.get())

    async def receive_from_model(self, ws: Any) -> None:
        async for message in ws:
            event = json.loads(message)
            kind = event.get("type")
            if kind == "response.output_audio.delta":
                self.out += base64.b64decode(event["delta"])
                if self.pacer is None or self.pacer.done():
                    self.pacer = asyncio.create_task(self.pace())
            elif kind == "input_audio_buffer.speech_started":
                self.out.clear()  # barge-in

    async def pace(self) -> None:
        """Send the queued frames: the first at once, then one every 20 ms."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        marker = 0x80
        while self.out:
            frame = bytes(self.out[:160]).ljust(160, b"\xff")
            del self.out[:160]
            if self.remote is not None and self.sock is not None:
                header = struct.pack(
                    "!BBHII",
                    0x80,
                    marker,
                    self.seq,
                    (self.ts + 160 * index) & 0xFFFFFFFF,
                    self.ssrc,
                )
                with contextlib.suppress(OSError):
                    self.sock.sendto(header + frame, self.remote)
                self.seq = (self.seq + 1) & 0xFFFF
            marker = 0
            index += 1
            await asyncio.sleep(max(0.0, start + index * 0.020 - loop.time()))
        self.ts = (self.ts + 160 * index) & 0xFFFFFFFF


class NaiveRelay:
    """The naive relay's ARI side: one websocket for events, REST for the rest."""

    def __init__(self) -> None:
        env = os.environ
        self.ari_url = env["ARI_URL"].rstrip("/")
        self.base = self.ari_url + "/ari"
        self.user = env["ARI_USER"]
        self.password = env["ARI_PASSWORD"]
        self.app = env["ARI_APP"]
        self.model_url = env["REALTIME_URL"]
        self.media_address = env.get("MEDIA_ADDRESS", "127.0.0.1")
        self.silence_ms = int(env.get("VAD_SILENCE_MS", "500"))
        self.calls: dict[str, NaiveCall] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._http: Any = None

    @property
    def http(self) -> Any:
        return self._http

    def session_update(self) -> dict[str, Any]:
        return {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.5,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": self.silence_ms,
                            "create_response": True,
                            "interrupt_response": True,
                        },
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                },
            },
        }

    async def post(self, path: str, **params: str) -> Any:
        async with self._http.post(self.base + path, params=params) as response:
            response.raise_for_status()
            return await response.json() if response.content_length else None

    async def run(self) -> None:
        import aiohttp

        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            self._http = http
            url = self.ari_url.replace("http", "ws", 1) + "/ari/events"
            params = {"app": self.app, "api_key": f"{self.user}:{self.password}"}
            async with http.ws_connect(url, params=params) as ws:
                print("naive relay registered", flush=True)
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    self.on_event(json.loads(message.data))

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        channel = (event.get("channel") or {}).get("id", "")
        if kind == "StasisStart":
            if channel.startswith("naive-em-"):
                call = self.calls.get(channel.removeprefix("naive-em-"))
                if call is not None:
                    call.em_started.set()
                return
            if channel in self.calls:
                return  # already served
            call = self.calls[channel] = NaiveCall(self, channel)
            task = asyncio.create_task(self.serve(call))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            call = self.calls.get(channel) or self.calls.get(channel.removeprefix("naive-em-"))
            if call is not None:
                call.ended.set()

    async def serve(self, call: NaiveCall) -> None:
        try:
            await call.run()
        except Exception as exc:
            print(f"naive call {call.channel_id} failed: {exc!r}", flush=True)
        finally:
            self.calls.pop(call.channel_id, None)


def serve_naive() -> int:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await NaiveRelay().run()

    asyncio.run(main())
    return 0


# --- the caller: an RTP phone bridged onto the rig's SIP leg ------------------------------------


class Caller:
    """One caller: the rig's SIP phone calling extension 100, its audio from and to this process.

    The rig's phone endpoint (Asterisk calling itself over PJSIP) places a
    real SIP call to the PBX, which hands it to the system under test. The
    phone's own channel goes to this benchmark's Stasis app, where it is
    bridged with an externalMedia channel pointed at a UDP socket here: what
    this process sends is what the phone says, what it receives is what the
    phone hears. Every packet is timed here: sends with ``time.time()`` right
    after ``sendto``, arrivals with the kernel's receive timestamp.
    """

    def __init__(self, ari: AriClient, events: AriEvents, tag: str, payloads: list[bytes]) -> None:
        self.ari = ari
        self.events = events
        self.phone_id = f"latph-{tag}"
        self.em_id = f"latem-{tag}"
        self.bridge_id = f"latbr-{tag}"
        self.payloads = payloads
        #: Wall-clock send time of each packet, by index.
        self.sent: list[float] = []
        #: How late each send was against its 20 ms deadline (seconds).
        self.lateness: list[float] = []
        #: (kernel arrival time, u-law payload) of every packet the phone heard.
        self.heard: list[tuple[float, bytes]] = []
        self.sock: socket.socket | None = None
        self.remote: tuple[str, int] | None = None

    async def dial(self) -> None:
        """Call the PBX and bridge the phone's channel with this process's socket."""
        ari = self.ari
        await ari.post(
            "/channels",
            endpoint="PJSIP/100@phone",
            app=self.events.app,
            channelId=self.phone_id,
            timeout=30,
        )

        def started(channel_id: str) -> Callable[[Any], bool]:
            return lambda e: bool(e.get("channel", {}).get("id") == channel_id)

        await self.events.next("StasisStart", started(self.phone_id), timeout=20)
        sock = self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("127.0.0.1", 0))
        em = await ari.post(
            "/channels/externalMedia",
            app=self.events.app,
            external_host=f"127.0.0.1:{sock.getsockname()[1]}",
            format="ulaw",
            channelId=self.em_id,
        )
        variables = em.get("channelvars") or {}
        self.remote = (
            str(variables["UNICASTRTP_LOCAL_ADDRESS"]),
            int(variables["UNICASTRTP_LOCAL_PORT"]),
        )
        await self.events.next("StasisStart", started(self.em_id), timeout=10)
        await ari.post("/bridges", type="mixing", bridgeId=self.bridge_id)
        await ari.post(
            f"/bridges/{self.bridge_id}/addChannel", channel=f"{self.phone_id},{self.em_id}"
        )
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    async def talk(self) -> None:
        """Send the caller's packets, each once its 20 ms are over (as a phone does)."""
        loop = asyncio.get_running_loop()
        sock, remote = self.sock, self.remote
        assert sock is not None and remote is not None
        ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
        start = loop.time()
        for index, payload in enumerate(self.payloads):
            deadline = start + (index + 1) * FRAME_S
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            header = struct.pack(
                "!BBHII", 0x80, 0x80 if index == 0 else 0, seq, ts & 0xFFFFFFFF, ssrc
            )
            sock.sendto(header + payload, remote)
            self.sent.append(time.time())
            self.lateness.append(loop.time() - deadline)
            seq = (seq + 1) & 0xFFFF
            ts += SAMPLES_PER_FRAME

    def _readable(self) -> None:
        sock = self.sock
        assert sock is not None
        while True:
            try:
                data, ancdata, _, _ = sock.recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            arrival = time.time()
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    arrival = sec + nsec * 1e-9
            if len(data) > 12:
                self.heard.append((arrival, data[12:]))

    async def hang_up(self) -> None:
        sock = self.sock
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            self.sock = None
        for path in (f"/channels/{self.em_id}", f"/channels/{self.phone_id}"):
            with contextlib.suppress(AriError):
                await self.ari.delete(path)
        with contextlib.suppress(AriError):
            await self.ari.delete(f"/bridges/{self.bridge_id}")

    def latencies(self, turn_ends: list[int]) -> tuple[list[float], int]:
        """Per caller turn: ms from the caller's last tone sample to the first reply sample heard.

        ``turn_ends``: each turn's end, as the index of the first sample after
        its tone. A phone sends a packet once its last sample is captured, so
        the caller stopped that packet's send time minus the samples after the
        end in it; the reply is heard from the arrival of its first packet
        plus the offset of its first loud sample in that packet.
        """
        latencies: list[float] = []
        missed = 0
        heard = self.heard
        sent = self.sent
        for end in turn_ends:
            packet = (end - 1) // SAMPLES_PER_FRAME
            if packet >= len(sent):
                missed += 1
                continue
            stop = sent[packet] - ((packet + 1) * SAMPLES_PER_FRAME - end) / 8000
            limit = stop + CALLER_PAUSE_S
            found = None
            for arrival, payload in heard:
                if arrival <= stop or arrival >= limit:
                    continue
                loud = np.flatnonzero(np.abs(ulaw_decode(payload).astype(np.int32)) >= LOUD)
                if loud.size:
                    found = arrival + int(loud[0]) / 8000
                    break
            if found is None:
                missed += 1
            else:
                latencies.append((found - stop) * 1000)
        return latencies, missed


def caller_audio(turns: int) -> tuple[list[bytes], list[int]]:
    """The caller's packets and the sample index where each turn's tone ends.

    LEAD_S of silence, then ``turns`` cycles of CYCLE_S: a tone of
    TONE_S plus a fraction of a frame (each turn ends at another point of its
    last packet, as a real caller does), then silence.
    """
    rate = 8000
    fade = round(0.005 * rate)
    ramp = np.linspace(0.0, 1.0, fade)
    lead = np.zeros(round(LEAD_S * rate))
    parts = [lead]
    ends = []
    position = len(lead)
    cycle = round(CYCLE_S * rate)
    for turn in range(turns):
        # The golden ratio spreads the ends evenly over the frame.
        n = round(TONE_S * rate) + int((turn * 0.618034) % 1.0 * SAMPLES_PER_FRAME)
        tone = 0.3 * np.sin(2 * np.pi * CALLER_HZ * np.arange(n) / rate)  # about -13 dBFS
        tone[:fade] *= ramp
        tone[-fade:] *= ramp[::-1]
        parts += [tone, np.zeros(cycle - n)]
        ends.append(position + n)
        position += cycle
    parts.append(lead)
    pcm = np.round(np.concatenate(parts) * 32767).astype(np.int16)
    ulaw = ulaw_encode(pcm)
    payloads = [ulaw[i : i + SAMPLES_PER_FRAME] for i in range(0, len(ulaw), SAMPLES_PER_FRAME)]
    return payloads, ends


# --- the benchmark ----------------------------------------------------------------------------


@dataclass
class Result:
    """One system's turns and costs."""

    system: str
    latencies_ms: list[float] = field(default_factory=list)
    missed: int = 0
    cpu_ms_per_call_second: float = float("nan")
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    send_late_ms: float = 0.0


def system_command(system: str) -> tuple[list[str], str]:
    """The command running ``system`` and the log line that says it is ready."""
    if system == "naive":
        return [sys.executable, str(Path(__file__).resolve()), "--serve-naive"], "relay registered"
    return [sys.executable, "-m", "controller", "run"], r"registered app="


def system_env(
    system: str, box: Sandbox, model_url: str, args: argparse.Namespace
) -> dict[str, str]:
    env = {
        "ARI_URL": box.ari_url,
        "ARI_USER": box.ari_user,
        "ARI_PASSWORD": box.ari_password,
        "ARI_APP": box.ari_app,
        "REALTIME_URL": model_url,
        "OPENAI_API_KEY": "sk-bench-local-model-server",
        "MEDIA_ADDRESS": "127.0.0.1",
        "MEDIA_PORTS": MEDIA_PORTS,
        "VAD_SILENCE_MS": str(args.silence_ms),
        "HTTP_LISTEN": "",
        "DATABASE_URL": f"sqlite://{args.state_dir / 'records.db'}",
        "LOG_LEVEL": "INFO",
    }
    if system != "naive":
        mode, _, loop = system.partition("+")
        env["REALTIME_AUDIO"] = mode
        if loop:
            env["EVENT_LOOP"] = loop
    return env


async def run_system(
    system: str, box: Sandbox, ari: AriClient, model_url: str, args: argparse.Namespace
) -> Result:
    result = Result(system)
    cmd, ready = system_command(system)
    log_path = args.state_dir / f"{system}.log"
    proc, log = start_logged(cmd, system_env(system, box, model_url, args), log_path)
    payloads, turn_ends = caller_audio(args.turns)
    callers: list[Caller] = []
    try:
        await asyncio.to_thread(wait_for_line, proc, log_path, ready, 20.0)
        await asyncio.sleep(1.0)  # let start-up settle
        result.rss_start_mib = proc_memory(proc.pid)[0]
        cpu0, wall0 = proc_cpu(proc.pid), time.monotonic()
        await asyncio.sleep(2.0)
        cpu1, wall1 = proc_cpu(proc.pid), time.monotonic()
        idle_rate = ((cpu1 or 0.0) - (cpu0 or 0.0)) / (wall1 - wall0)
        async with ari.events(CALLER_APP) as events:
            tag = system.replace("+", "-")  # it names channels and bridges
            callers = [Caller(ari, events, f"{tag}-{i}", payloads) for i in range(args.calls)]
            try:
                await asyncio.gather(*(c.dial() for c in callers))

                async def talk(index: int, caller: Caller) -> None:
                    # Turns apart, and each call at its own phase within the 20 ms
                    # frame (evenly spread): the systems' clocks meet every phase.
                    stagger = CALLER_PAUSE_S / args.calls
                    await asyncio.sleep(index * (stagger + FRAME_S / args.calls))
                    await caller.talk()

                cpu1, wall1 = proc_cpu(proc.pid), time.monotonic()
                await asyncio.gather(*(talk(i, c) for i, c in enumerate(callers)))
                await asyncio.sleep(0.5)
                cpu2, wall2 = proc_cpu(proc.pid), time.monotonic()
                result.rss_peak_mib = proc_memory(proc.pid)[1]
            finally:
                await asyncio.gather(*(c.hang_up() for c in callers))
        await wait_no_channels(ari, 15)
        window = wall2 - wall1
        busy = (cpu2 or 0.0) - (cpu1 or 0.0) - idle_rate * window
        result.cpu_ms_per_call_second = busy * 1000 / (args.calls * window)
        for caller in callers:
            latencies, missed = caller.latencies(turn_ends)
            result.latencies_ms += latencies
            result.missed += missed
        late = [x for c in callers for x in c.lateness]
        result.send_late_ms = percentile(late, 99) * 1000 if late else 0.0
    finally:
        stop_process(proc)
        log.close()
    return result


async def run_bench(args: argparse.Namespace, box: Sandbox, model_url: str) -> list[Result]:
    results: list[Result] = []
    async with AriClient(box.ari_url, box.ari_user, box.ari_password) as ari:
        try:
            for system in args.systems:
                results.append(await run_system(system, box, ari, model_url, args))
                await ari.hangup_all()
        finally:
            with contextlib.suppress(Exception):
                await ari.hangup_all()
    return results


# --- output ---------------------------------------------------------------------------------


def label(system: str) -> str:
    return "naive relay pcmu" if system == "naive" else f"controller {system}"


def print_report(results: list[Result], args: argparse.Namespace, load_before: str) -> None:
    print()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average {load_before} before, {loadavg()} after"
    )
    print(
        f"{args.calls} call(s) x {args.turns} turns per system; caller: "
        f"{TONE_S:g} s tone (+ 0-20 ms) every {CYCLE_S:g} s; model: answers after"
        f" {args.silence_ms} ms of silence with a {REPLY_MS} ms tone"
    )
    print()
    naive = next((r for r in results if r.system == "naive" and r.latencies_ms), None)
    naive_p50 = percentile(naive.latencies_ms, 50) if naive else None
    print(
        f"{'system':<26} {'turns':>5} {'missed':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}"
        f" {'added p50':>9} {'added p95':>9} {'vs naive':>8} {'CPU ms/call-s':>13}"
        f" {'RSS start':>9} {'RSS peak':>8} {'caller late':>11}"
    )
    for r in results:
        values = r.latencies_ms
        p50, p95 = percentile(values, 50), percentile(values, 95)
        top = max(values) if values else float("nan")
        versus = f"{p50 - naive_p50:+8.1f}" if naive_p50 is not None else f"{'-':>8}"
        print(
            f"{label(r.system):<26} {len(values):5d} {r.missed:6d} {p50:7.1f} {p95:7.1f} {top:7.1f}"
            f" {p50 - args.silence_ms:9.1f} {p95 - args.silence_ms:9.1f} {versus}"
            f" {r.cpu_ms_per_call_second:13.2f} {r.rss_start_mib:9.1f} {r.rss_peak_mib:8.1f}"
            f" {r.send_late_ms:11.2f}"
        )
    print(
        "(latency: the caller's last tone sample leaves -> the first reply sample arrives, ms;"
        f"\n added = latency - the {args.silence_ms} ms the model waits; vs naive = p50 - the"
        " naive relay's p50;\n CPU ms per call-second of the system's process, idle subtracted;"
        " RSS in MiB;\n caller late = p99 ms the benchmark's own caller sent a packet after its"
        " 20 ms deadline)"
    )


# --- main --------------------------------------------------------------------------------------


#: A controller system may name its event loop: pcmu+asyncio, pcm24k+uvloop.
EVENT_LOOPS = ("", "auto", "uvloop", "asyncio")


def _systems(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]

    def known(value: str) -> bool:
        mode, plus, loop = value.partition("+")
        return mode in SYSTEMS and (not plus or (mode != "naive" and loop in EVENT_LOOPS[1:]))

    if not values or not all(known(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of {', '.join(SYSTEMS)}; a controller mode may name its"
            " event loop: pcmu+asyncio, pcm24k+uvloop"
        )
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="controller pcmu only, one call of three turns"
    )
    parser.add_argument(
        "--systems",
        type=_systems,
        default=list(SYSTEMS),
        help="what to measure, comma-separated (default: naive,pcmu,pcm24k)",
    )
    parser.add_argument(
        "--calls", type=int, default=8, help="concurrent calls per system (default 8)"
    )
    parser.add_argument("--turns", type=int, default=6, help="caller turns per call (default 6)")
    parser.add_argument(
        "--silence-ms", type=int, default=300, help="VAD silence that ends a turn (default 300)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help="the sandbox's state and the systems' logs (default: %(default)s)",
    )
    parser.add_argument("--serve-naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.systems, args.calls, args.turns = ["pcmu"], 1, 3
    if args.calls < 1 or args.turns < 1:
        parser.error("--calls and --turns must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_naive:
        return serve_naive()
    load_before = loadavg()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        print("quick mode: controller pcmu only, one call of three turns, rough numbers")
    print(
        f"bench_latency: systems {','.join(args.systems)}; logs in {args.state_dir}",
        file=sys.stderr,
    )
    server = box = None
    try:
        server, url = start_model_server(tone_hz=REPLY_HZ, tone_ms=REPLY_MS)
        box = start_sandbox_patiently(args.state_dir)
        results = asyncio.run(run_bench(args, box, url))
    except KeyboardInterrupt:
        print("bench_latency: interrupted", file=sys.stderr)
        return 130
    except (SandboxError, RuntimeError, AssertionError) as exc:
        print(f"bench_latency: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_process(server)
        if box is not None:
            box.stop()
    print_report(results, args, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
