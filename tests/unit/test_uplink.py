"""Uplink: what of the caller's audio goes to the model at once, and what waits for its pair."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from controller.audio.constants import ULAW_LINEAR, ULAW_SILENCE_FRAME
from controller.audio.g711 import ULAW_DECODE_TABLE, ulaw_encode
from controller.call.bargein import is_loud
from controller.media.uplink import Uplink, is_voiced

QUIET = ULAW_SILENCE_FRAME


def tone(dbfs: float) -> bytes:
    t = np.arange(160) / 8000
    amplitude = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return ulaw_encode(np.rint(amplitude * np.sin(2 * np.pi * 400 * t)).astype(np.int16))


LOUD = tone(-20.0)


def test_voiced_is_speech_level_and_quiet_is_not():
    assert is_voiced(LOUD) and is_voiced(tone(-30.0))
    assert not is_voiced(QUIET) and not is_voiced(tone(-50.0))


def test_listening_loud_goes_at_once_quiet_waits_for_its_pair():
    uplink = Uplink()
    assert uplink.push(QUIET) is None  # nothing to say yet: paired
    assert uplink.held_bytes == 160
    # Speech may be starting: at once, with what was held (in order).
    assert uplink.push(LOUD) == QUIET + LOUD
    assert uplink.push(QUIET) is None
    assert uplink.push(QUIET) == QUIET + QUIET


def test_while_the_model_hears_speech_quiet_goes_at_once_loud_waits():
    uplink = Uplink()
    uplink.model_hears_speech = True
    assert uplink.push(LOUD) is None  # more speech changes nothing
    assert uplink.push(LOUD) == LOUD + LOUD
    assert uplink.push(LOUD) is None
    # The turn may be ending: every quiet frame goes at once.
    assert uplink.push(QUIET) == LOUD + QUIET
    assert uplink.push(QUIET) == QUIET
    assert (uplink.sent_at_once, uplink.sent_held) == (2, 1)


def test_the_pure_python_ulaw_table_and_is_loud_match_g711():
    assert tuple(int(x) for x in ULAW_DECODE_TABLE) == ULAW_LINEAR
    assert is_loud(tone(-40.0)) and not is_loud(tone(-50.0)) and not is_loud(b"")


def test_a_pcmu_controller_does_not_load_numpy():
    code = (
        "import sys, controller.cli, controller.serve, controller.app, controller.call.call;"
        "from controller.audio.convert import converters_for; converters_for('pcmu');"
        "print(sorted(m for m in ('numpy', 'soxr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
