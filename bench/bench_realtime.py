"""Cost of the Realtime hot paths: parsing ``response.output_audio.delta``, building an append.

Run: ``.venv/bin/python bench/bench_realtime.py [--quick]`` (prints numbers,
asserts nothing). ``--quick`` runs 2% of the iterations, twice instead of
five times: a smoke test of a second or two, with rough numbers.

Each line gives the best of several timing runs, in microseconds per event,
and the ratio of the baseline to the path the controller uses, measured in
the same run. About 50 deltas and 50 appends per second flow per call.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.realtime.events import (  # noqa: E402
    InputAudioBufferAppend,
    ResponseOutputAudioDelta,
    parse_server_event,
)

_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
#: Share of the iterations run by ``--quick``.
QUICK_SCALE = 0.02


@dataclass(frozen=True)
class Timing:
    """How long to measure: a share of each iteration count, and how many runs."""

    scale: float = 1.0
    repeat: int = 5

    def best_us(self, fn: Callable[[], object], number: int) -> float:
        """Best-of-``repeat`` time of one call of ``fn``, in microseconds."""
        number = max(int(number * self.scale), 20)
        return min(timeit.repeat(fn, number=number, repeat=self.repeat)) / number * 1e6


def delta_message(nbytes: int) -> bytes:
    return json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_CAbcdEfGhIjKlMnOpQrSt",
            "response_id": "resp_CAbcdEfGhIjKlMnOpQrSt",
            "item_id": "item_CAbcdEfGhIjKlMnOpQrSt",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(os.urandom(nbytes)).decode(),
            "obfuscation": "k3J9qPz",
        },
        separators=(",", ":"),
    ).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a second or two: fewer iterations and repeats, rough numbers",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    timing = Timing()
    if parse_args(argv).quick:
        timing = Timing(QUICK_SCALE, 2)
        print("quick mode: few iterations, rough numbers")
    best_us = timing.best_us
    try:
        from openai.types.realtime import RealtimeServerEvent

        openai_adapter: TypeAdapter[object] | None = TypeAdapter(RealtimeServerEvent)
    except ImportError:  # openai is a test-only dependency
        openai_adapter = None

    print("parse response.output_audio.delta (us/event; lower is better)")
    header = f"{'payload':>22} {'parse_server_event':>19} {'loads+validate':>15} {'ratio':>6}"
    header += f" {'json.loads only':>16}"
    if openai_adapter is not None:
        header += f" {'openai types':>13}"
    print(header)
    for label, nbytes in (
        ("pcmu 20 ms (160 B)", 160),
        ("pcmu 100 ms (800 B)", 800),
        ("pcm24k 20 ms (960 B)", 960),
        ("pcm24k 100 ms (4800 B)", 4800),
    ):
        raw = delta_message(nbytes)
        assert isinstance(parse_server_event(raw), ResponseOutputAudioDelta)

        def ours(raw: bytes = raw) -> object:
            return parse_server_event(raw)

        def baseline(raw: bytes = raw) -> object:
            return ResponseOutputAudioDelta.model_validate(json.loads(raw))

        def loads_only(raw: bytes = raw) -> object:
            return json.loads(raw)

        fast = best_us(ours, 20_000)
        full = best_us(baseline, 20_000)
        floor = best_us(loads_only, 20_000)
        line = f"{label:>22} {fast:>19.2f} {full:>15.2f} {full / fast:>5.1f}x {floor:>16.2f}"
        if openai_adapter is not None:

            def sdk_types(
                raw: bytes = raw, adapter: TypeAdapter[object] = openai_adapter
            ) -> object:
                return adapter.validate_python(json.loads(raw))

            line += f" {best_us(sdk_types, 5_000):>13.2f}"
        print(line)

    print()
    print("build input_audio_buffer.append from raw audio (us/event)")
    print(f"{'payload':>22} {'send_audio path':>19} {'pydantic model':>15} {'ratio':>6}")
    for label, nbytes in (("pcmu 20 ms (160 B)", 160), ("pcm24k 20 ms (960 B)", 960)):
        chunk = os.urandom(nbytes)

        def fast_path(chunk: bytes = chunk) -> str:
            return _APPEND_PREFIX + base64.b64encode(chunk).decode("ascii") + '"}'

        def model_path(chunk: bytes = chunk) -> str:
            return InputAudioBufferAppend.from_bytes(chunk).to_json()

        assert json.loads(fast_path()) == json.loads(model_path())
        fast = best_us(fast_path, 50_000)
        full = best_us(model_path, 20_000)
        print(f"{label:>22} {fast:>19.2f} {full:>15.2f} {full / fast:>5.1f}x")


if __name__ == "__main__":
    main()
