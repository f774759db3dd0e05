"""controller.devtools.modelserver.audio and .vad: the test peer's own codecs and VAD (pure)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.devtools.modelserver.audio import (
    AudioFormat,
    alaw_decode,
    alaw_encode,
    load_wav,
    resample,
    rms_dbfs,
    tone,
    ulaw_decode,
    ulaw_encode,
)
from controller.devtools.modelserver.vad import EnergyVad, SpeechStarted, SpeechStopped

ALL_CODES = bytes(range(256))


def test_ulaw_reference_values() -> None:
    # ITU-T G.711: 0xFF and 0x7F are +0/-0, 0x80 is the positive maximum.
    decoded = ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE, 0x7E, 0xEF]))
    assert decoded.tolist() == [0, 0, 32124, -32124, 8, -8, 132]
    assert ulaw_encode(np.array([0], dtype=np.int16)) == b"\xff"


def test_alaw_reference_values() -> None:
    decoded = alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))
    assert decoded.tolist() == [8, -8, 32256, -32256]
    assert alaw_encode(np.array([0], dtype=np.int16)) == b"\xd5"


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_g711_code_round_trip(encode, decode) -> None:
    values = decode(ALL_CODES)
    assert np.array_equal(decode(encode(values)), values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=64))
def test_ulaw_quantisation_error_is_bounded(values: list[int]) -> None:
    samples = np.array(values, dtype=np.int16)
    back = ulaw_decode(ulaw_encode(samples)).astype(np.int32)
    error = np.abs(back - samples.astype(np.int32))
    # Half the largest u-law step (1024) at full scale, relative bound elsewhere.
    assert np.all(error <= np.maximum(8, np.abs(samples.astype(np.int32)) // 16 + 8))


@pytest.mark.parametrize(
    ("fmt", "rate", "bytes_per_ms"),
    [
        ({"type": "audio/pcmu"}, 8000, 8),
        ({"type": "audio/pcma"}, 8000, 8),
        ({"type": "audio/pcm", "rate": 24000}, 24000, 48),
    ],
)
def test_audio_format(fmt: dict[str, object], rate: int, bytes_per_ms: int) -> None:
    audio_format = AudioFormat.from_session(fmt)
    assert (audio_format.rate, audio_format.bytes_per_ms) == (rate, bytes_per_ms)
    samples = tone(440, 100, rate)
    wire = audio_format.encode(samples)
    assert len(wire) == 100 * bytes_per_ms
    back = audio_format.decode(wire)
    assert back.size == samples.size
    assert abs(rms_dbfs(back) - rms_dbfs(samples)) < 0.5


def test_pcm_decode_drops_odd_byte() -> None:
    fmt = AudioFormat("audio/pcm", 24000)
    assert fmt.decode(b"\x01\x00\x02").tolist() == [1]


def test_tone_level_and_length() -> None:
    samples = tone(1000, 500, 8000, level_dbfs=-20)
    assert samples.size == 4000
    assert rms_dbfs(samples) == pytest.approx(-20, abs=0.3)
    assert abs(int(samples[0])) < 50 and abs(int(samples[-1])) < 50  # faded


def test_rms_of_silence() -> None:
    assert rms_dbfs(np.zeros(10, dtype=np.int16)) == float("-inf")
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == float("-inf")


def test_resample_keeps_duration_and_level() -> None:
    samples = tone(300, 1000, 8000, level_dbfs=-12)
    up = resample(samples, 8000, 24000)
    assert abs(up.size - 24000) <= 2
    assert rms_dbfs(up[2000:-2000]) == pytest.approx(-12, abs=0.5)
    down = resample(up, 24000, 8000)
    assert abs(down.size - 8000) <= 2
    assert resample(samples, 8000, 8000) is samples


def _write_wav(path: Path, samples: np.ndarray, rate: int, channels: int, width: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())


def test_load_wav_stereo_16bit(tmp_path: Path) -> None:
    mono = tone(500, 200, 16000)
    stereo = np.repeat(mono, 2)
    path = tmp_path / "stereo.wav"
    _write_wav(path, stereo.astype("<i2"), 16000, 2, 2)
    samples, rate = load_wav(path)
    assert rate == 16000
    assert np.array_equal(samples, mono)


def test_load_wav_8bit(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    _write_wav(path, np.array([128, 255, 0], dtype=np.uint8), 8000, 1, 1)
    samples, rate = load_wav(path)
    assert samples.tolist() == [0, 127 << 8, -32768]


def test_load_wav_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        load_wav(path)
    path24 = tmp_path / "24.wav"
    _write_wav(path24, np.zeros(6, dtype=np.uint8), 8000, 1, 3)
    with pytest.raises(ValueError, match="24-bit"):
        load_wav(path24)


# --- VAD ------------------------------------------------------------------------------


def speech(ms: int, rate: int = 8000) -> np.ndarray:
    return tone(300, ms, rate, level_dbfs=-15)


def silence(ms: int, rate: int = 8000) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def test_vad_start_and_stop_times() -> None:
    vad = EnergyVad(8000, silence_duration_ms=500, prefix_padding_ms=300, min_speech_ms=30)
    audio = np.concatenate((silence(1000), speech(800), silence(1000)))
    events = vad.feed(audio)
    assert len(events) == 2
    started, stopped = events
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    # Onset at ~1000 ms (the fade-in delays the first voiced frame by <= 10 ms).
    assert 690 <= started.audio_start_ms <= 710
    assert 1790 <= stopped.speech_end_ms <= 1800
    assert stopped.audio_end_ms == stopped.speech_end_ms + 500
    assert stopped.audio_start_ms == started.audio_start_ms
    assert not vad.speaking


def test_vad_prefix_does_not_reach_before_buffer_start() -> None:
    vad = EnergyVad(8000, prefix_padding_ms=300, floor_ms=0)
    (started,) = vad.feed(np.concatenate((silence(100), speech(200))))
    assert isinstance(started, SpeechStarted)
    assert started.audio_start_ms == 0


def test_vad_ignores_short_blips_and_quiet_audio() -> None:
    vad = EnergyVad(8000, min_speech_ms=50)
    assert vad.feed(np.concatenate((speech(20), silence(500)))) == []
    quiet = tone(300, 1000, 8000, level_dbfs=-60)
    assert vad.feed(quiet) == []


def test_vad_reset_forgets_speech() -> None:
    vad = EnergyVad(8000)
    vad.feed(speech(300))
    assert vad.speaking
    vad.reset()
    assert not vad.speaking
    assert vad.feed(silence(1000)) == []


def test_vad_at_24k_with_origin() -> None:
    vad = EnergyVad(
        24000, silence_duration_ms=200, prefix_padding_ms=0, origin_ms=5000, floor_ms=5000
    )
    events = vad.feed(np.concatenate((speech(300, 24000), silence(400, 24000))))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert events[0].audio_start_ms >= 5000
    assert vad.position_ms == 5700


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4000), min_size=1, max_size=12))
def test_vad_is_independent_of_chunking(cuts: list[int]) -> None:
    audio = np.concatenate((silence(300), speech(600), silence(700), speech(300), silence(600)))
    whole = EnergyVad(8000).feed(audio)
    vad = EnergyVad(8000)
    pieces = []
    start = 0
    for cut in sorted(set(cuts)):
        if cut < audio.size:
            pieces.append(audio[start:cut])
            start = cut
    pieces.append(audio[start:])
    chunked = [event for piece in pieces for event in vad.feed(piece)]
    assert chunked == whole
    assert len(whole) == 4
