"""``ari-realtime model-server``: run the local Realtime test peer from the shell.

This is a LOCAL TEST AND DEMO PEER, NOT A MODEL. It speaks the OpenAI
Realtime GA protocol on ``ws://HOST:PORT/v1/realtime`` and answers every
caller turn with an echo of the caller, a tone or a WAV file (or follows a
``--script`` of spoken replies, function calls and silences), so the
controller can be run end to end without an OpenAI account. Point the
controller at it with ``REALTIME_URL=ws://127.0.0.1:PORT/v1/realtime`` and
any non-empty ``OPENAI_API_KEY``.

The command does not import the ``openai`` package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from controller.devtools.modelserver.audio import load_wav
from controller.devtools.modelserver.config import ServerConfig
from controller.devtools.modelserver.script import CallStep, SpeakStep, load_script
from controller.devtools.modelserver.server import ModelServer

__all__ = ["build_parser", "configure_parser", "config_from_args", "main", "run"]

DEFAULT_PORT = 8765

_DESCRIPTION = (
    "Run a local test and demo peer that speaks the OpenAI Realtime GA protocol "
    "(it is not a model: it answers with an echo, a tone or a WAV file)."
)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the model server's options to ``parser`` (also used by ``controller.cli``)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--reply",
        choices=("echo", "tone", "file"),
        default="echo",
        help="what each reply plays: the caller's last utterance, a tone, or --reply-file "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--tone-hz", type=float, default=440.0, help="tone frequency (default: %(default)s)"
    )
    parser.add_argument(
        "--tone-ms", type=int, default=1000, help="tone duration (default: %(default)s)"
    )
    parser.add_argument(
        "--reply-file", type=Path, help="PCM WAV file to play as the reply (any rate)"
    )
    parser.add_argument(
        "--script",
        type=Path,
        metavar="FILE",
        help='JSON list of steps, one per response of each session ({"speak": ...}, '
        '{"call": ...} or {"silent": ...}), then --reply as usual '
        "(see the module controller.devtools.modelserver.script)",
    )
    parser.add_argument(
        "--transcript",
        default=ServerConfig.transcript,
        help="assistant transcript sent with each reply (default: %(default)r)",
    )
    parser.add_argument(
        "--input-transcript",
        default=ServerConfig.input_transcript,
        help="caller transcript sent when the session asks for input transcription "
        "(default: %(default)r)",
    )
    parser.add_argument(
        "--api-key",
        help="accept only this key (default: any Authorization: Bearer or api-key value)",
    )
    parser.add_argument(
        "--vad-threshold-dbfs",
        type=float,
        default=ServerConfig.vad_threshold_dbfs,
        help="frame level counted as speech by the energy VAD (default: %(default)s dBFS)",
    )
    parser.add_argument(
        "--chunk-ms",
        type=int,
        default=ServerConfig.chunk_ms,
        help="audio per delta (default: %(default)s)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=ServerConfig.speed,
        help="how much faster than real time replies stream; 0 = at once (default: %(default)s)",
    )
    parser.add_argument(
        "--preamble-ms",
        type=int,
        default=0,
        help="speak a short preamble item of this length before each reply, in the same "
        "response, as reasoning models do (default: %(default)s, none)",
    )
    parser.add_argument(
        "--preamble-hz",
        type=float,
        default=ServerConfig.preamble_hz,
        help="preamble tone frequency (default: %(default)s)",
    )
    parser.add_argument(
        "--mcp-server",
        action="append",
        default=[],
        metavar="LABEL=TOOL[,TOOL...]",
        help="tools an MCP server label lists (repeatable); listing any other label fails",
    )
    parser.add_argument(
        "--session-max-s",
        type=float,
        help="end sessions after this many seconds with session_expired (real API: 3600)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every session and turn")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser (``python -m controller.devtools.modelserver``)."""
    parser = argparse.ArgumentParser(prog="ari-realtime model-server", description=_DESCRIPTION)
    return configure_parser(parser)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Turn parsed options into a :class:`ServerConfig`.

    Raises:
        ValueError: an option is invalid (the message says which).
    """
    if args.reply == "file":
        if args.reply_file is None:
            raise ValueError("--reply file needs --reply-file WAV")
        if not args.reply_file.is_file():
            raise ValueError(f"--reply-file {args.reply_file} does not exist")
        load_wav(args.reply_file)  # fail now, not at the first reply
    script = load_script(args.script) if args.script is not None else ()
    for index, step in enumerate(script):
        speak = step.speak_first if isinstance(step, CallStep) else step
        if isinstance(speak, SpeakStep) and speak.file is not None:
            try:
                load_wav(speak.file)  # fail now, not at the step
            except (OSError, ValueError) as exc:
                raise ValueError(f"--script step {index}: {exc}") from None
    if not 0 <= args.port <= 65535:
        raise ValueError("--port must be between 0 and 65535")
    if args.chunk_ms <= 0:
        raise ValueError("--chunk-ms must be positive")
    if args.speed < 0:
        raise ValueError("--speed must be 0 or more")
    if args.preamble_ms < 0:
        raise ValueError("--preamble-ms must be 0 or more")
    mcp_tools: dict[str, list[str]] = {}
    for spec in args.mcp_server:
        label, sep, tools = spec.partition("=")
        if not sep or not label.strip():
            raise ValueError(f"--mcp-server {spec!r}: expected LABEL=TOOL[,TOOL...]")
        mcp_tools[label.strip()] = [t.strip() for t in tools.split(",") if t.strip()]
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        reply=args.reply,
        tone_hz=args.tone_hz,
        tone_ms=args.tone_ms,
        reply_file=str(args.reply_file) if args.reply_file else None,
        transcript=args.transcript,
        input_transcript=args.input_transcript,
        vad_threshold_dbfs=args.vad_threshold_dbfs,
        chunk_ms=args.chunk_ms,
        speed=args.speed,
        session_max_s=args.session_max_s,
        record_events=False,
        script=script,
        preamble_ms=args.preamble_ms,
        preamble_hz=args.preamble_hz,
        mcp_tools=mcp_tools,
    )


async def _serve(config: ServerConfig) -> None:
    server = ModelServer(config)
    port = await server.start()
    print(
        f"model server (local test peer, not a model) listening on ws://{config.host}:{port}/v1/realtime",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    """Run the server from parsed options until SIGINT/SIGTERM; return the exit status."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"ari-realtime model-server: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        print(
            f"ari-realtime model-server: cannot listen on {config.host}:{config.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``ari-realtime model-server [options]``."""
    return run(build_parser().parse_args(argv))
