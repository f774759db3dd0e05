"""Scale: the real controller process against a synthetic Asterisk and model, 50 to 500 calls.

Prints numbers only (no asserts). The controller runs as in production
(``python -m controller run``, its own process); this process plays
everything around it, cheaply enough to reach hundreds of calls:

* **Asterisk**: an ARI stand-in on aiohttp (the events websocket and the
  REST calls a call makes: answer, externalMedia, bridges, hang-ups) and
  real UDP RTP: each call's caller sends one 20 ms PCMU packet every 20 ms,
  each call at its own phase, from one socket (Asterisk's RTP address for
  every call), and every packet the controller sends back is received and
  timed there. Each caller talks (loud audio) ``--talk`` seconds of every
  ``--cycle`` (1.5 of 4), from a random point of the cycle, and is quiet in
  between.
* **the model**: a minimal websocket server (raw asyncio, no per-message
  library overhead) that answers ``session.update``, counts the caller's
  ``input_audio_buffer.append`` messages without decoding them, plays a VAD
  that knows the callers' schedule (``speech_started`` 60 ms into a talk
  spell, ``speech_stopped`` after 500 ms of quiet) and after each turn
  streams a reply of ``--reply-ms`` in 100 ms deltas at 4x real time (as the
  real API does), so a call's agent talks about 40% of the time.
  ``--worst``: the callers are loud throughout and the stand-in never says
  ``speech_started`` (replies on a timer), so the controller forwards every
  packet as its own append: the most it ever sends.

Per step (``--calls``, default 50,100,200,500): set up N calls, let them run
a second, measure for ``--seconds``, hang them up, wait until all is gone.
Printed per step:

* controller CPU per call-second (its process, from /proc, idle subtracted);
* outbound pacing error: how far each packet the controller sent arrived
  from its talkspurt's 20 ms grid (the grid is fitted to the talkspurt's
  RTP timestamps; a talkspurt's first packet, sent at once by design, is
  left out), p50/p99/max in ms;
* caller audio to model latency: from the packet's send time here to the
  append carrying it arriving at the model stand-in (pcmu: each packet's
  payload carries its call and index; pcm24k: the n-th append is taken to
  carry the n-th packet), p50/p99 in ms;
* event-loop lag: how late the controller's media clock ticks ran
  (``ari_realtime_media_clock_lateness_seconds`` from its ``/metrics``),
  p99 as the upper bound of its histogram bucket;
* playout underruns (``ari_realtime_playout_underruns`` from ``/metrics``);
* RSS of the controller: at the end of the window, and per call over the
  idle controller.
* how late this process's own 5 ms sending ticks ran (p99), to tell a
  saturated load generator from a saturated controller.

This machine's cores may be shared: the load generator itself needs about a
core at 500 calls (every packet both ways passes through it), so the knee
printed is the machine's, controller and generator together; compare the
generator's lateness and the machine's busy share with the controller's CPU.

    .venv/bin/python bench/bench_scale.py [--quick] [--calls 50,100,200,500]
        [--seconds 10] [--mode pcmu|pcm24k] [--worst] [--tls] [--loop uvloop,asyncio]

``--tls``: the controller talks to the model stand-in over ``wss://`` (a
self-signed certificate it trusts through ``SSL_CERT_FILE``), as it does to
the real API, so encrypting every append counts too.

``--loop uvloop,asyncio`` runs the steps once per event loop (the
controller's ``EVENT_LOOP``), each with its own controller process, to
compare them in one run.

``--quick``: 10 calls for 3 seconds (a smoke test with rough numbers).
Needs no root and no Asterisk.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import socket
import ssl
import struct
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import (  # noqa: E402
    free_port,
    int_list,
    loadavg,
    machine_ticks,
    percentile,
    proc_cpu,
    proc_memory,
    start_logged,
    stop_process,
    wait_for_line,
)

from controller.devtools.rig.pool import make_cert  # noqa: E402

FRAME_S = 0.020
SAMPLES_PER_FRAME = 160
#: The RTP payload carries its call and its packet index in its first 8 bytes.
TAG = struct.Struct("!II")
RTP_HEADER = struct.Struct("!BBHII")
DEFAULT_STATE = Path("/var/tmp/ari-realtime/bench-scale")
#: UDP ports the controller binds for RTP.
MEDIA_PORTS = "47000-48999"
APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Linux's SO_TIMESTAMPNS (not in Python's socket module): kernel receive timestamps, so a
#: late load generator does not show up as the controller's pacing error.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("qq")
DELTA_MS = 100
MODEL_SPEED = 4.0
#: The stand-in's "VAD": speech starts this far into a talk spell, stops after this much quiet.
VAD_START_S = 0.06
VAD_STOP_S = 0.5


# --- the synthetic Asterisk ----------------------------------------------------------------------


@dataclass
class Call:
    """One synthetic call: the caller's channel, its RTP, what came back."""

    number: int
    channel_id: str
    phase: float
    #: Where in the talk cycle the call starts (seconds).
    talk_offset: float = 0.0
    start: float = 0.0
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    ts: int = field(default_factory=lambda: random.getrandbits(32))
    index: int = 0
    next_send: float = 0.0
    #: The controller's RTP socket for this call (externalMedia's external_host).
    controller: tuple[str, int] | None = None
    em_id: str = ""
    bridged: bool = False
    ended: bool = False
    #: Send time of every caller packet, by index (loop.time()).
    sent: array[float] = field(default_factory=lambda: array("d"))
    #: (kernel arrival time, rtp timestamp, marker) of packets from the controller, while recording.
    received: list[tuple[float, int, bool]] = field(default_factory=list)
    appends: int = 0

    def cycle_position(self, t: float, cycle: float) -> float:
        """Seconds into the caller's talk cycle at ``t`` (talking first, then quiet)."""
        return (t - self.start + self.talk_offset) % cycle


class FakeAsterisk:
    """ARI (REST + events websocket) and RTP for synthetic calls."""

    def __init__(self, app: str, *, talk: float, cycle: float, worst: bool) -> None:
        self.app = app
        self.talk = talk
        self.cycle = cycle
        self.worst = worst
        self.calls: dict[str, Call] = {}
        self.by_number: dict[int, Call] = {}
        self.by_em: dict[str, Call] = {}
        self.by_address: dict[tuple[str, int], Call] = {}
        self.em_address: dict[str, tuple[str, int]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.bridges: dict[str, list[str]] = {}
        self.ws: web.WebSocketResponse | None = None
        self.registered = asyncio.Event()
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        self.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.rtp_port = self.rtp.getsockname()[1]
        self.recording = False
        self.lateness: list[float] = []
        self.bad_rtp = 0
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._sender: asyncio.Task[None] | None = None
        self._counter = 0

    # -- the HTTP side -------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ari/events", self.events)
        app.router.add_route("*", "/ari/{path:.*}", self.rest)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        loop.add_reader(self.rtp.fileno(), self._rtp_readable)
        self._sender = asyncio.create_task(self._send_loop())

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        asyncio.get_running_loop().remove_reader(self.rtp.fileno())
        self.rtp.close()
        if self.ws is not None:
            await self.ws.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.ws = ws
        self.registered.set()
        async for message in ws:
            if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        self.registered.clear()
        return ws

    async def emit(self, event: dict[str, Any]) -> None:
        event.setdefault("application", self.app)
        event.setdefault("timestamp", "2026-01-01T00:00:00.000+0000")
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(event))

    def channel_json(self, channel_id: str, name: str, number: str = "") -> dict[str, Any]:
        return {
            "id": channel_id,
            "name": name,
            "state": "Up",
            "caller": {"name": "", "number": number},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": "from-scale",
                "exten": "100",
                "priority": 1,
                "app_name": "Stasis",
                "app_data": self.app,
            },
            "creationtime": "2026-01-01T00:00:00.000+0000",
            "language": "en",
        }

    async def rest(self, request: web.Request) -> web.Response:
        path = request.match_info["path"].strip("/")
        parts = path.split("/")
        method = request.method
        q = request.query
        if method == "GET" and path in ("channels", "bridges"):
            return web.json_response([] if path == "bridges" else list(self.channels.values()))
        if parts[0] == "channels" and len(parts) >= 2:
            if parts[1] == "externalMedia" and method == "POST":
                return await self.external_media(q)
            channel_id = parts[1]
            action = parts[2] if len(parts) > 2 else ""
            if method == "DELETE" and not action:
                return await self.delete_channel(channel_id)
            if channel_id not in self.channels:
                return web.json_response({"message": "Channel not found"}, status=404)
            if action == "variable" and method == "GET":
                return web.json_response({"message": "Provided variable was not found"}, status=404)
            if method == "GET" and not action:
                return web.json_response(self.channels[channel_id])
            return web.Response(status=204)
        if parts[0] == "bridges":
            if method == "POST" and len(parts) == 1:
                bridge_id = q.get("bridgeId", f"bridge-{len(self.bridges)}")
                self.bridges[bridge_id] = []
                return web.json_response({"id": bridge_id, "technology": "simple_bridge"})
            if len(parts) >= 2 and parts[1] in self.bridges:
                bridge_id = parts[1]
                if method == "DELETE":
                    del self.bridges[bridge_id]
                    return web.Response(status=204)
                if len(parts) == 3 and parts[2] == "addChannel":
                    members = q.get("channel", "").split(",")
                    self.bridges[bridge_id] += members
                    self.bridged(members)
                    return web.Response(status=204)
                return web.Response(status=204)
            return web.json_response({"message": "Bridge not found"}, status=404)
        if parts[0] in ("asterisk", "applications"):
            return web.json_response({})
        return web.json_response({"message": "not here"}, status=404)

    async def external_media(self, q: Any) -> web.Response:
        channel_id = q.get("channelId") or f"em-{len(self.channels)}"
        host, _, port = q.get("external_host", "").rpartition(":")
        channel = self.channel_json(channel_id, f"UnicastRTP/{host}:{port}")
        channel["channelvars"] = {
            "UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1",
            "UNICASTRTP_LOCAL_PORT": str(self.rtp_port),
        }
        self.channels[channel_id] = channel
        self.em_address[channel_id] = (host, int(port))
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(
                self.emit({"type": "StasisStart", "args": [], "channel": channel})
            )
        )
        return web.json_response(channel)

    def bridged(self, members: list[str]) -> None:
        call = next((self.calls[m] for m in members if m in self.calls), None)
        em = next((m for m in members if m not in self.calls), None)
        if call is None or em is None:
            return
        address = self.em_address.get(em)
        if address is None:
            return
        self.by_address[address] = call
        call.controller = address
        call.em_id = em
        self.by_em[em] = call
        call.start = asyncio.get_running_loop().time()
        call.next_send = call.start + call.phase
        call.bridged = True

    async def delete_channel(self, channel_id: str) -> web.Response:
        channel = self.channels.pop(channel_id, None)
        if channel is None:
            return web.json_response({"message": "Channel not found"}, status=404)
        self.em_address.pop(channel_id, None)
        call = self.by_em.pop(channel_id, None)
        if call is not None and call.controller is not None:
            self.by_address.pop(call.controller, None)
            call.controller = None
        await self.emit({"type": "StasisEnd", "channel": channel})
        await self.emit({"type": "ChannelDestroyed", "channel": channel, "cause": 16})
        return web.Response(status=204)

    # -- calls ----------------------------------------------------------------------------

    async def start_call(self, number: int) -> Call:
        self._counter += 1
        channel_id = f"caller-{self._counter}"
        call = Call(
            number,
            channel_id,
            phase=random.random() * FRAME_S,
            talk_offset=random.random() * self.cycle,
        )
        self.calls[channel_id] = call
        self.by_number[number] = call
        channel = self.channel_json(channel_id, f"PJSIP/scale-{number:08x}", str(number))
        self.channels[channel_id] = channel
        await self.emit({"type": "StasisStart", "args": ["100"], "channel": channel})
        return call

    async def end_call(self, call: Call) -> None:
        call.ended = True
        call.bridged = False
        channel = self.channels.pop(call.channel_id, None)
        if channel is None:
            return
        await self.emit({"type": "ChannelHangupRequest", "channel": channel, "cause": 16})
        await self.emit({"type": "StasisEnd", "channel": channel})
        await self.emit({"type": "ChannelDestroyed", "channel": channel, "cause": 16})

    def forget(self, call: Call) -> None:
        self.calls.pop(call.channel_id, None)
        self.by_number.pop(call.number, None)

    # -- RTP --------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        """Every 5 ms, send every caller packet that is due (each call on its own phase)."""
        loop = asyncio.get_running_loop()
        sendto = self.rtp.sendto
        pack = RTP_HEADER.pack
        tag = TAG.pack
        loud = b"\x10\x90" * ((SAMPLES_PER_FRAME - TAG.size) // 2)
        quiet = b"\xff" * (SAMPLES_PER_FRAME - TAG.size)
        talk, cycle, worst = self.talk, self.cycle, self.worst
        tick = 0.005
        start = loop.time()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * tick - loop.time()))
            now = loop.time()
            if self.recording:
                self.lateness.append(now - (start + n * tick))
            for call in list(self.calls.values()):
                if not call.bridged or call.controller is None:
                    continue
                while call.next_send <= now:
                    talking = worst or call.cycle_position(call.next_send, cycle) < talk
                    payload = tag(call.number, call.index) + (loud if talking else quiet)
                    header = pack(0x80, 0, call.seq, call.ts, call.ssrc)
                    with contextlib.suppress(OSError):
                        sendto(header + payload, call.controller)
                    call.sent.append(loop.time())
                    call.index += 1
                    call.seq = (call.seq + 1) & 0xFFFF
                    call.ts = (call.ts + SAMPLES_PER_FRAME) & 0xFFFFFFFF
                    call.next_send += FRAME_S
                    if now - call.next_send > 0.2:  # far behind: skip, do not burst
                        call.next_send = now + FRAME_S

    def _rtp_readable(self) -> None:
        recvmsg = self.rtp.recvmsg
        wall = time.time
        unpack_time = TIMESPEC.unpack_from
        by_address = self.by_address
        recording = self.recording
        while True:
            try:
                data, ancdata, _, address = recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            call = by_address.get(address)
            if call is None or len(data) < 12:
                self.bad_rtp += 1
                continue
            if recording:
                # When the kernel queued it (the controller's sendto on loopback),
                # not when this process got round to reading it.
                arrival = wall()
                for level, kind, cdata in ancdata:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = unpack_time(cdata)
                        arrival = sec + nsec * 1e-9
                _, b1, _, ts, _ = RTP_HEADER.unpack_from(data)
                call.received.append((arrival, ts, bool(b1 & 0x80)))


# --- the synthetic model -------------------------------------------------------------------------


def _unmask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _frame(text: bytes) -> bytes:
    n = len(text)
    if n < 126:
        return bytes((0x81, n)) + text
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + text
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + text


class ModelSession(asyncio.Protocol):
    """One websocket connection of the controller to the model stand-in."""

    def __init__(self, model: FakeModel) -> None:
        self.model = model
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.open = False
        self.number = -1
        self.appends = 0
        self.mode = "pcmu"
        self.next_reply = 0.0
        self.reply_seq = 0
        self.audio_bytes = 0
        self.hears_speech = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.model.sessions.discard(self)

    def send(self, event: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(json.dumps(event, separators=(",", ":")).encode()))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1")
            del buffer[: end + 4]
            match = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", head)
            key = match.group(1).encode() if match else b""
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
            assert self.transport is not None
            self.transport.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            self.open = True
            self.model.sessions.add(self)
            self.send({"type": "session.created", "event_id": "event_0", "session": _session()})
        model = self.model
        while len(buffer) >= 2:
            b0, b1 = buffer[0], buffer[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buffer) < 4:
                    return
                n = int.from_bytes(buffer[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buffer) < 10:
                    return
                n = int.from_bytes(buffer[2:10], "big")
                pos = 10
            mask = b""
            if b1 & 0x80:
                if len(buffer) < pos + 4:
                    return
                mask = bytes(buffer[pos : pos + 4])
                pos += 4
            if len(buffer) < pos + n:
                return
            opcode = b0 & 0x0F
            if opcode == 1:
                # Enough of the text to see what it is: an append is counted and,
                # in pcmu, its first packet's tag read (the rest is never decoded).
                start = _unmask(buffer[pos : pos + min(n, 64)], mask)
                if start.startswith(APPEND_PREFIX):
                    self.appends += 1
                    self.audio_bytes += (n - len(APPEND_PREFIX) - 2) * 3 // 4
                    model.append(self, start[len(APPEND_PREFIX) : len(APPEND_PREFIX) + 12])
                else:
                    self.control(_unmask(buffer[pos : pos + n], mask))
            elif opcode == 8:
                if self.transport is not None:
                    self.transport.write(b"\x88\x00")
                    self.transport.close()
            elif opcode == 9 and self.transport is not None:
                self.transport.write(b"\x8a" + bytes((n,)) + _unmask(buffer[pos : pos + n], mask))
            del buffer[: pos + n]

    def control(self, text: bytes) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if event.get("type") == "session.update":
            session = event.get("session") or {}
            found = re.search(r"caller \"?(\d+)", str(session.get("instructions", "")))
            if found:
                self.number = int(found.group(1))
            audio_format = session.get("audio", {}).get("output", {}).get("format", {})
            self.mode = "pcm24k" if audio_format.get("type") == "audio/pcm" else "pcmu"
            self.send(
                {
                    "type": "session.updated",
                    "event_id": "event_1",
                    "session": {**_session(), **session},
                }
            )
            self.next_reply = asyncio.get_running_loop().time() + self.model.first_reply()


def _session() -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_scale",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
        },
    }


class FakeModel:
    """The model stand-in: counts appends, times tagged ones, streams replies on a cycle."""

    def __init__(
        self,
        asterisk: FakeAsterisk,
        *,
        reply_ms: int,
        cycle: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.asterisk = asterisk
        self.tls = tls
        self.reply_ms = reply_ms
        self.cycle = cycle
        self.sessions: set[ModelSession] = set()
        self.latencies: list[float] = []
        self.recording = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self._task: asyncio.Task[None] | None = None
        self._active: list[tuple[ModelSession, str, str, int]] = []
        self._counter = 0
        samples = b"\x10\x90" * (8 * DELTA_MS // 2)  # any audio: a harsh square wave
        self._delta = {
            "pcmu": base64.b64encode(samples).decode(),
            "pcm24k": base64.b64encode(b"\x00\x10" * (24 * DELTA_MS)).decode(),
        }

    def first_reply(self) -> float:
        return 1.0 + random.random() * self.cycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ModelSession(self), "127.0.0.1", 0, ssl=self.tls
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self._task = asyncio.create_task(self._replies())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.server is not None:
            self.server.close()
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()

    def append(self, session: ModelSession, b64_head: bytes) -> None:
        if not self.recording:
            return
        now = asyncio.get_running_loop().time()
        calls = self.asterisk.by_number
        if session.mode == "pcmu":
            with contextlib.suppress(ValueError, struct.error):
                number, index = TAG.unpack(base64.b64decode(b64_head)[: TAG.size])
                call = calls.get(number)
                if call is not None and index < len(call.sent):
                    self.latencies.append(now - call.sent[index])
            return
        call = calls.get(session.number)
        if call is not None:
            # The newest caller packet this append completes: 960 bytes per 20 ms.
            index = session.audio_bytes // 960 - 1
            if 0 <= index < len(call.sent):
                self.latencies.append(now - call.sent[index])

    async def _replies(self) -> None:
        """Every 25 ms: start the replies that are due, send one delta of each one going."""
        loop = asyncio.get_running_loop()
        step = DELTA_MS / 1000 / MODEL_SPEED
        deltas = self.reply_ms // DELTA_MS
        while True:
            await asyncio.sleep(step)
            now = loop.time()
            for session in list(self.sessions):
                if session.closed or not session.next_reply:
                    continue
                if self.asterisk.worst:
                    if now >= session.next_reply:
                        session.next_reply += self.cycle
                        self._reply(session)
                    continue
                call = self.asterisk.by_number.get(session.number)
                if call is None or not call.bridged:
                    continue
                # A VAD's view of the caller's talk cycle: speech starts 60 ms
                # into a talk spell, stops after 500 ms of quiet; the reply follows.
                position = call.cycle_position(now, self.cycle)
                talk = self.asterisk.talk
                if not session.hears_speech and VAD_START_S <= position < talk:
                    session.hears_speech = True
                    session.send(
                        {
                            "type": "input_audio_buffer.speech_started",
                            "event_id": "event_s",
                            "audio_start_ms": 0,
                            "item_id": f"item_u{session.number}",
                        }
                    )
                elif session.hears_speech and position >= talk + VAD_STOP_S:
                    session.hears_speech = False
                    session.send(
                        {
                            "type": "input_audio_buffer.speech_stopped",
                            "event_id": "event_t",
                            "audio_end_ms": 0,
                            "item_id": f"item_u{session.number}",
                        }
                    )
                    self._reply(session)
            still = []
            for session, response, item, sent in self._active:
                if session.closed:
                    continue
                session.send(
                    {
                        "type": "response.output_audio.delta",
                        "event_id": "event_d",
                        "response_id": response,
                        "item_id": item,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": self._delta[session.mode],
                    }
                )
                if sent + 1 >= deltas:
                    self._end(session, response, item)
                else:
                    still.append((session, response, item, sent + 1))
            self._active = still

    def _reply(self, session: ModelSession) -> None:
        self._counter += 1
        response, item = f"resp_{self._counter}", f"item_{self._counter}"
        self._begin(session, response, item)
        self._active.append((session, response, item, 0))

    @staticmethod
    def _item(item: str, status: str) -> dict[str, Any]:
        content = (
            [{"type": "output_audio", "transcript": "A tone."}] if status != "in_progress" else []
        )
        return {
            "id": item,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _response(self, response: str, status: str, output: list[Any]) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": response,
            "status": status,
            "status_details": None,
            "output": output,
            "conversation_id": "conv_scale",
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
            "usage": None,
            "metadata": None,
        }

    def _begin(self, session: ModelSession, response: str, item: str) -> None:
        ids = {"response_id": response, "item_id": item, "output_index": 0, "content_index": 0}
        session.send(
            {
                "type": "response.created",
                "event_id": "event_r",
                "response": self._response(response, "in_progress", []),
            }
        )
        session.send(
            {
                "type": "response.output_item.added",
                "event_id": "event_a",
                "response_id": response,
                "output_index": 0,
                "item": self._item(item, "in_progress"),
            }
        )
        session.send(
            {
                "type": "conversation.item.added",
                "event_id": "event_c",
                "previous_item_id": None,
                "item": self._item(item, "in_progress"),
            }
        )
        session.send(
            {
                "type": "response.content_part.added",
                "event_id": "event_p",
                **ids,
                "part": {"type": "audio", "transcript": ""},
            }
        )

    def _end(self, session: ModelSession, response: str, item: str) -> None:
        ids = {"response_id": response, "item_id": item, "output_index": 0, "content_index": 0}
        done = self._item(item, "completed")
        session.send({"type": "response.output_audio.done", "event_id": "event_e", **ids})
        session.send(
            {
                "type": "response.output_audio_transcript.done",
                "event_id": "event_t",
                **ids,
                "transcript": "A tone.",
            }
        )
        session.send(
            {
                "type": "response.output_item.done",
                "event_id": "event_o",
                "response_id": response,
                "output_index": 0,
                "item": done,
            }
        )
        session.send(
            {
                "type": "response.done",
                "event_id": "event_f",
                "response": self._response(response, "completed", [done]),
            }
        )


# --- measuring -----------------------------------------------------------------------------------


def pacing_errors(received: list[tuple[float, int, bool]]) -> list[float]:
    """How far each packet arrived from its talkspurt's 20 ms grid, in seconds.

    A talkspurt starts at a marker bit. Its grid is the packets' RTP
    timestamps (8 kHz), placed by the median offset of arrival - timestamp;
    the first packet of a talkspurt (sent at once, on purpose before the
    grid) is left out.
    """
    errors: list[float] = []
    spurt: list[float] = []

    def close() -> None:
        if len(spurt) > 1:
            body = spurt[1:]
            middle = sorted(body)[len(body) // 2]
            errors.extend(abs(x - middle) for x in body)

    base_ts = 0
    for arrival, ts, marker in received:
        if marker:
            close()
            spurt = []
            base_ts = ts
        offset = ((ts - base_ts) & 0xFFFFFFFF) / 8000
        spurt.append(arrival - offset)
    close()
    return errors


_BUCKET = re.compile(r'^ari_realtime_media_clock_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)$')
_UNDERRUNS = re.compile(r"^ari_realtime_playout_underruns_total (\S+)$")


async def scrape(url: str) -> tuple[list[tuple[float, float]], float]:
    """(lateness histogram buckets as (upper bound s, count), underruns total) from /metrics."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    buckets = []
    underruns = 0.0
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if match:
            bound = float("inf") if match.group(1) == "+Inf" else float(match.group(1))
            buckets.append((bound, float(match.group(2))))
        else:
            found = _UNDERRUNS.match(line)
            if found:
                underruns = float(found.group(1))
    return buckets, underruns


def bucket_percentile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The upper bound of the bucket holding the ``q`` percentile of what was observed between."""
    counts = [(bound, b - a) for (bound, b), (_, a) in zip(after, before, strict=False)]
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return float("nan")
    for bound, cumulative in counts:
        if cumulative >= total * q / 100:
            return bound
    return float("inf")


@dataclass
class Step:
    calls: int
    window: float = 0.0
    cpu_ms_per_call_second: float = float("nan")
    cpu_share: float = float("nan")
    pacing: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lag_p99: float = float("nan")
    underruns: float = 0.0
    rss_mib: float = 0.0
    rss_per_call_kib: float = float("nan")
    generator_late: list[float] = field(default_factory=list)
    machine_busy: float = float("nan")
    packets_in: int = 0
    set_up_s: float = 0.0
    failed: int = 0


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def run_step(
    n: int,
    asterisk: FakeAsterisk,
    model: FakeModel,
    pid: int,
    metrics_url: str,
    idle_rss: float,
    idle_cpu_rate: float,
    args: argparse.Namespace,
) -> Step:
    step = Step(n)
    started = time.monotonic()
    calls = []
    for number in range(n):
        calls.append(await asterisk.start_call(number))
        if number % 25 == 24:
            await asyncio.sleep(0.05)  # a burst of arrivals, not all in one instant
    try:
        await wait_until(
            lambda: all(c.bridged for c in calls) and len(model.sessions) >= n,
            30 + n * 0.1,
            f"{n} calls to be set up",
        )
    except RuntimeError as exc:
        step.failed = sum(1 for c in calls if not c.bridged)
        print(f"bench_scale: {exc} ({step.failed} not set up); measuring anyway", file=sys.stderr)
    step.set_up_s = time.monotonic() - started
    await asyncio.sleep(args.warmup)
    for call in calls:
        call.received.clear()
    asterisk.lateness.clear()
    model.latencies.clear()
    lag_before, underruns_before = await scrape(metrics_url)
    busy0, total0 = machine_ticks()
    cpu0, wall0 = proc_cpu(pid), time.monotonic()
    sent0 = sum(len(c.sent) for c in calls)
    asterisk.recording = model.recording = True
    await asyncio.sleep(args.seconds)
    asterisk.recording = model.recording = False
    cpu1, wall1 = proc_cpu(pid), time.monotonic()
    busy1, total1 = machine_ticks()
    step.packets_in = sum(len(c.sent) for c in calls) - sent0
    lag_after, _ = await scrape(metrics_url)
    step.rss_mib = proc_memory(pid)[0]
    step.window = wall1 - wall0
    cpu = (cpu1 or 0.0) - (cpu0 or 0.0) - idle_cpu_rate * step.window
    step.cpu_ms_per_call_second = cpu * 1000 / (n * step.window)
    step.cpu_share = ((cpu1 or 0.0) - (cpu0 or 0.0)) / step.window
    step.machine_busy = (busy1 - busy0) / max(1, total1 - total0)
    step.pacing = [e for c in calls for e in pacing_errors(c.received)]
    step.latencies = list(model.latencies)
    step.generator_late = list(asterisk.lateness)
    step.lag_p99 = bucket_percentile(lag_before, lag_after, 99)
    step.rss_per_call_kib = (step.rss_mib - idle_rss) * 1024 / n
    for call in calls:
        await asterisk.end_call(call)
    await wait_until(
        lambda: not asterisk.by_em and not asterisk.bridges and not model.sessions,
        30 + n * 0.05,
        "the calls to be torn down",
    )
    for call in calls:
        asterisk.forget(call)
    await asyncio.sleep(0.5)  # the records are written at the call's end
    _, underruns_after = await scrape(metrics_url)
    step.underruns = underruns_after - underruns_before
    return step


def controller_env(
    asterisk: FakeAsterisk, model: FakeModel, http_port: int, args: argparse.Namespace
) -> dict[str, str]:
    return {
        "ARI_URL": f"http://127.0.0.1:{asterisk.port}",
        "ARI_USER": "scale",
        "ARI_PASSWORD": "scale-password",
        "ARI_APP": asterisk.app,
        "REALTIME_URL": f"ws://127.0.0.1:{model.port}/v1/realtime",
        "OPENAI_API_KEY": "sk-bench-scale-synthetic-model",
        "REALTIME_AUDIO": args.mode,
        "MEDIA_ADDRESS": "127.0.0.1",
        "MEDIA_PORTS": MEDIA_PORTS,
        "HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "DATABASE_URL": f"sqlite://{args.state_dir / 'records.db'}",
        "AGENT_INSTRUCTIONS": "You answer caller {caller_number}.",
        "AGENT_GREETING": "",
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
    }


def make_certificate(state_dir: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 (the controller trusts it via SSL_CERT_FILE)."""
    cert, key = make_cert(state_dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


#: The controller's EVENT_LOOP values --loop may compare.
EVENT_LOOPS = ("uvloop", "asyncio", "auto")


async def run(args: argparse.Namespace, event_loop: str) -> tuple[list[Step], float]:
    asterisk = FakeAsterisk("scale", talk=args.talk, cycle=args.cycle, worst=args.worst)
    cert, tls = make_certificate(args.state_dir) if args.tls else (None, None)
    model = FakeModel(asterisk, reply_ms=args.reply_ms, cycle=args.cycle, tls=tls)
    await asterisk.start()
    await model.start()
    http_port = free_port()
    log_path = args.state_dir / "controller.log"
    db = args.state_dir / "records.db"
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "controller", "run"]
    if args.profile:
        cmd[1:1] = ["-m", "cProfile", "-o", str(args.profile)]
    env = controller_env(asterisk, model, http_port, args)
    env["EVENT_LOOP"] = event_loop
    if cert is not None:
        env["REALTIME_URL"] = f"wss://127.0.0.1:{model.port}/v1/realtime"
        env["SSL_CERT_FILE"] = str(cert)  # read by OpenSSL's default verify paths
    proc, log = start_logged(cmd, env, log_path)
    steps: list[Step] = []
    start_rss = 0.0
    try:
        await asyncio.to_thread(wait_for_line, proc, log_path, r"registered app=", 30.0)
        await asyncio.sleep(1.0)
        start_rss = proc_memory(proc.pid)[0]
        cpu0, wall0 = proc_cpu(proc.pid), time.monotonic()
        await asyncio.sleep(2.0)
        cpu1, wall1 = proc_cpu(proc.pid), time.monotonic()
        idle_rate = ((cpu1 or 0.0) - (cpu0 or 0.0)) / (wall1 - wall0)
        url = f"http://127.0.0.1:{http_port}/metrics"
        for n in args.calls:
            idle_rss = proc_memory(proc.pid)[0]
            step = await run_step(n, asterisk, model, proc.pid, url, idle_rss, idle_rate, args)
            steps.append(step)
            print_step(step, args, header=len(steps) == 1, start_rss=start_rss)
    finally:
        stop_process(proc)
        log.close()
        await model.stop()
        await asterisk.stop()
    return steps, start_rss


# --- output --------------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:6.2f}" if values else f"{'-':>6}"


def print_step(step: Step, args: argparse.Namespace, *, header: bool, start_rss: float) -> None:
    if header:
        print(
            f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs;"
            f" mode {args.mode}; event loop {args.event_loop};"
            f" model over {'TLS (wss)' if args.tls else 'plain ws'}; controller RSS at start"
            f" {start_rss:.1f} MiB; window"
            f" {args.seconds:g} s; "
            + (
                f"callers loud, no VAD, a {args.reply_ms} ms reply every {args.cycle:g} s"
                if args.worst
                else f"callers talk {args.talk:g} s of {args.cycle:g}, a {args.reply_ms} ms reply"
                " after each turn"
            )
        )
        print()
        print(
            f"{'calls':>5} {'CPU ms/call-s':>13} {'CPU core':>8}"
            f" {'pacing p50':>10} {'p99':>6} {'max':>6}"
            f" {'to model p50':>12} {'p99':>6} {'lag p99':>7} {'underruns':>9}"
            f" {'RSS MiB':>7} {'KiB/call':>8} {'gen lag p99':>12} {'machine':>7}"
        )
    pacing_max = f"{max(step.pacing) * 1000:6.2f}" if step.pacing else f"{'-':>6}"
    lag = f"<={step.lag_p99 * 1000:5.1f}" if step.lag_p99 == step.lag_p99 else f"{'-':>7}"
    print(
        f"{step.calls:5d} {step.cpu_ms_per_call_second:13.2f} {step.cpu_share:8.0%}"
        f" {_ms(step.pacing, 50):>10} {_ms(step.pacing, 99)} {pacing_max}"
        f" {_ms(step.latencies, 50):>12} {_ms(step.latencies, 99)} {lag:>7}"
        f" {step.underruns:9.0f} {step.rss_mib:7.1f} {step.rss_per_call_kib:8.0f}"
        f" {_ms(step.generator_late, 99):>12} {step.machine_busy:7.0%}",
        flush=True,
    )


def print_notes(steps: list[Step]) -> None:
    print(
        "(CPU: the controller process, idle subtracted, per call-second, and its share of one"
        " core;\n pacing: |arrival - the talkspurt's 20 ms grid| of each packet but the first,"
        " ms;\n to model: caller packet sent -> its append at the model, ms; lag: the media"
        " clock's\n tick lateness, bucket bound, ms; underruns: playout ran dry mid-reply;"
        " RSS at the end of\n the window, KiB/call over the idle controller; gen lag: how late this"
        " load generator's\n 5 ms sending ticks ran, ms; machine: busy share of all CPUs, other"
        " users included)"
    )
    failed = [s for s in steps if s.failed]
    for step in failed:
        print(f"note: {step.calls} calls: {step.failed} were not set up in time")


def _loops(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in EVENT_LOOPS for v in values):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(EVENT_LOOPS)}")
    if "uvloop" in values:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise argparse.ArgumentTypeError(
                "uvloop is not installed: .venv/bin/pip install uvloop"
            ) from None
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10 calls for 3 s (smoke test)")
    parser.add_argument(
        "--calls",
        type=int_list,
        default=[50, 100, 200, 500],
        help="concurrent calls per step (default: 50,100,200,500)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--mode", choices=("pcmu", "pcm24k"), default="pcmu")
    parser.add_argument("--reply-ms", type=int, default=1500, help="model reply length")
    parser.add_argument(
        "--cycle", type=float, default=4.0, help="the caller's talk cycle, seconds (default 4)"
    )
    parser.add_argument(
        "--talk", type=float, default=1.5, help="the caller talks this long per cycle (1.5)"
    )
    parser.add_argument(
        "--worst",
        action="store_true",
        help="the caller is loud throughout and the model never hears speech: every packet "
        "is forwarded by itself (the most the controller ever sends); replies on a timer",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the model over wss (a self-signed certificate made with openssl), as with the "
        "real API: the TLS records' CPU counts too",
    )
    parser.add_argument(
        "--loop",
        type=_loops,
        default=["auto"],
        help="the controller's event loop, comma-separated to compare (each gets its own "
        "controller, in this order; uvloop must be installed): uvloop, asyncio, auto"
        " (default: the product's default, auto)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run the controller under cProfile and write its stats to FILE (slows it down)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help="the controller's log and records (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.seconds, args.warmup = [10], 3.0, 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        print("quick mode: 10 calls for 3 s, rough numbers")
    load_before = loadavg()
    steps: list[Step] = []
    for number, event_loop in enumerate(args.loop):
        if number:
            print()
        args.event_loop = event_loop
        try:
            steps += asyncio.run(run(args, event_loop))[0]
        except KeyboardInterrupt:
            return 130
        except RuntimeError as exc:
            print(f"bench_scale: {exc}", file=sys.stderr)
            return 1
    print_notes(steps)
    print(f"load average {load_before} before, {loadavg()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
