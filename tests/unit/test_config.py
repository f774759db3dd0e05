"""Settings: defaults, valid values, and one clear line for each kind of bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controller.config import ENV_NAMES, load_settings
from controller.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_documented_contract() -> None:
    s = load_settings()
    assert s.ari_url == "http://127.0.0.1:8088"
    assert s.ari_app == "voicebot"
    assert s.realtime_url == "wss://api.openai.com/v1/realtime"
    assert s.realtime_model == "gpt-realtime"
    assert s.realtime_voice == "marin"
    assert s.realtime_audio == "pcmu"
    assert s.media_address == "127.0.0.1"
    assert s.media_port_range == (40000, 40999)
    assert s.ari_events_url == "ws://127.0.0.1:8088/ari/events"


def test_environment_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARI_URL", "https://pbx.example:8089/")
    monkeypatch.setenv("REALTIME_AUDIO", "pcm24k")
    monkeypatch.setenv("MEDIA_PORTS", "41000-41010")
    monkeypatch.setenv("VAD_THRESHOLD", "0.7")
    s = load_settings()
    assert s.ari_url == "https://pbx.example:8089"
    assert s.ari_events_url == "wss://pbx.example:8089/ari/events"
    assert s.realtime_audio == "pcm24k"
    assert s.media_port_range == (41000, 41010)
    assert s.vad_threshold == 0.7


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "ari.env"
    env.write_text("ARI_APP=sales\nREALTIME_VOICE=cedar\n")
    monkeypatch.setenv("REALTIME_VOICE", "coral")
    s = load_settings(env)
    assert s.ari_app == "sales"
    assert s.realtime_voice == "coral"


def test_missing_env_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--env-file: .*nope.env does not exist"):
        load_settings(tmp_path / "nope.env")


def test_azure_is_detected_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_URL", "wss://res.openai.azure.com/openai/v1/realtime")
    assert load_settings().is_azure
    monkeypatch.setenv("REALTIME_URL", "wss://api.openai.com/v1/realtime")
    assert not load_settings().is_azure


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ARI_URL", "pbx:8088", "ARI_URL: must be an http:// or https:// URL"),
        ("ARI_URL", "http://pbx:99999", "ARI_URL: has a malformed host or a port outside"),
        ("ARI_URL", "http://pbx:0", "ARI_URL: has port 0"),
        ("REALTIME_URL", "wss://api:70000/v1", "REALTIME_URL: has a malformed host or a port"),
        ("REALTIME_URL", "https://api.openai.com", "REALTIME_URL: must be a ws:// or wss://"),
        ("REALTIME_AUDIO", "slin16", "REALTIME_AUDIO: Input should be 'pcmu' or 'pcm24k'"),
        ("ARI_APP", "voice bot", "ARI_APP: must be a non-empty Stasis app name"),
        ("MEDIA_ADDRESS", "pbx.local", "MEDIA_ADDRESS: must be an IP address"),
        ("MEDIA_ADDRESS", "0.0.0.0", "MEDIA_ADDRESS: must be a concrete address"),
        ("MEDIA_PORTS", "40000:40999", "MEDIA_PORTS: must be a port range"),
        ("MEDIA_PORTS", "50-60", "MEDIA_PORTS: must be a range FIRST-LAST with 1024"),
        ("MEDIA_PORTS", "41000-40000", "MEDIA_PORTS: must be a range FIRST-LAST"),
        ("VAD_THRESHOLD", "2", "VAD_THRESHOLD: Input should be less than or equal to 1"),
        ("VAD_SILENCE_MS", "soon", "VAD_SILENCE_MS: Input should be a valid integer"),
        ("VAD_TYPE", "energy", "VAD_TYPE: Input should be 'server_vad' or 'semantic_vad'"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: Input should be"),
        ("EVENT_LOOP", "trio", "EVENT_LOOP: Input should be 'auto', 'uvloop' or 'asyncio'"),
        ("ARI_LOST_SECONDS", "-1", "ARI_LOST_SECONDS: Input should be greater than or equal to 0"),
        ("ARI_LOST_SECONDS", "soon", "ARI_LOST_SECONDS: Input should be a valid number"),
    ],
)
def test_each_bad_value_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert repr(value) in message  # says what it got


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(OPENAI_API_KEY="sk-live-very-secret", ARI_PASSWORD="hunter2-pw")
    shown = repr(settings) + str(settings) + str(settings.model_dump())
    assert "sk-live-very-secret" not in shown
    assert "hunter2-pw" not in shown
    assert settings.openai_api_key.get_secret_value() == "sk-live-very-secret"


def test_cli_reports_a_bad_setting_in_one_line_without_traceback() -> None:
    env = {"ARI_URL": "ftp://nowhere", "OPENAI_API_KEY": "sk-should-not-appear", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "ari-realtime: bad setting: ARI_URL: must be an http:// or https:// URL such as "
        "http://127.0.0.1:8088 (got 'ftp://nowhere')"
    ]
    assert "sk-should-not-appear" not in proc.stderr


def test_run_reports_a_bad_agents_file_in_one_line_without_traceback(tmp_path) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text('[profiles.sales]\ntools = ["fax"]\n')
    env = {"AGENTS_FILE": str(agents), "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"ari-realtime: bad setting: AGENTS_FILE: {agents}: profile 'sales' lists unknown "
        "tool 'fax'; known: hangup, send_dtmf, transfer"
    ]
