"""``ari-realtime calls``: the table and ``calls show ID``, read from a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.cli import main
from controller.config import ENV_NAMES
from controller.records import CallRecord, UsageTotals
from controller.store import open_store
from tests.callrecords import at, ended_record, live_record
from tests.pg import free_port


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite://{tmp_path}/calls.db"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def store_records(url: str, *records: CallRecord) -> None:
    async def write() -> None:
        store = await open_store(url)
        try:
            for record in records:
                await store.update(record)
        finally:
            await store.close()

    asyncio.run(write())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_calls_lists_newest_first_as_a_table(db: str, capsys) -> None:
    store_records(
        db,
        ended_record("c-old", at(0), outcome="caller_hung_up"),
        ended_record("c-out", at(60), direction="outbound", dialled_number="+4989555"),
        live_record("c-live", at(120), caller_number="+4930999"),
    )
    code, lines, err = run(capsys, "calls")
    assert (code, err) == (0, "")
    assert lines == [
        "started (UTC)        id      direction  caller       dialled   duration  outcome"
        "         cost",
        "2026-11-20 09:02:00  c-live  inbound    +4930999     100       live      live"
        "            $0.0000",
        "2026-11-20 09:01:00  c-out   outbound   +4930123456  +4989555  1:12      agent_hung_up"
        "   $0.1523",
        "2026-11-20 09:00:00  c-old   inbound    +4930123456  100       1:12      caller_hung_up"
        "  $0.1523",
    ]


def test_calls_filters_and_limits(db: str, capsys) -> None:
    store_records(
        db,
        ended_record("a", at(0), outcome="caller_hung_up"),
        ended_record("b", at(1), direction="outbound"),
        ended_record("c", at(2), outcome="caller_hung_up"),
    )
    _, lines, _ = run(capsys, "calls", "--outcome", "caller_hung_up")
    assert [line.split()[2] for line in lines[1:]] == ["c", "a"]
    _, lines, _ = run(capsys, "calls", "--direction", "outbound")
    assert [line.split()[2] for line in lines[1:]] == ["b"]
    _, lines, _ = run(capsys, "calls", "--limit", "1")
    assert [line.split()[2] for line in lines[1:]] == ["c"]
    _, lines, _ = run(capsys, "calls", "--direction", "inbound", "--outcome", "transferred")
    assert lines == ["no calls"]


def test_a_cost_missing_from_the_record_is_estimated_and_marked(db: str, capsys) -> None:
    usage = UsageTotals(output_audio_tokens=10_000)  # 10k at $64/1M = $0.64
    store_records(
        db,
        ended_record("priced-now", at(0), cost_usd=0.0, usage=usage),
        ended_record("unknown", at(1), cost_usd=0.0, usage=usage, model="my-deployment"),
    )
    _, lines, _ = run(capsys, "calls")
    assert lines[1].endswith("  ?") and lines[2].endswith("  ~$0.6400")
    assert lines[-1].startswith("~ estimated with the prices of built-in (")


def test_calls_show_prints_one_call_in_full(db: str, capsys) -> None:
    store_records(db, ended_record("c1", at(0)))
    code, lines, err = run(capsys, "calls", "show", "c1")
    assert (code, err) == (0, "")
    text = "\n".join(lines)
    for expected in (
        "call        c1",
        "outcome     agent_hung_up: caller said goodbye",
        "caller      +4930123456 (Alice Example)",
        "started     2026-11-20 09:00:00 UTC",
        "duration    1:12",
        "cost        $0.1523 (tokens: audio in 1000, text in 500, cached in 300, audio out 2000,"
        " text out 100)",
        "  +0:00.3  agent   Hello, sales speaking.",
        "  +0:02.5  caller  When do you open? Grüße 👋",
        "  #1  caller stopped +0:04.0  response 310 ms, first audio 420 ms, first frame 440 ms;"
        " barge-in, agent stopped in 35 ms",
        '  +0:05.0  lookup_order {"number": "A-17", "nested": {"ok": true, "n": [1, 2]}}'
        '  ok (120 ms): {"status": "shipped"}',
        "  +0:09.0  transfer {}  refused (?)",
        "  +0:03.0  caller  1234#",
    ):
        assert expected in text, expected
    assert lines.index("transcript") < lines.index("turns") < lines.index("tool calls")


def test_calls_show_of_a_live_call_without_parts(db: str, capsys) -> None:
    store_records(db, live_record("c2", at(0)))
    code, lines, _ = run(capsys, "calls", "show", "c2")
    assert code == 0
    assert "status      live" in lines and "ended       -" in lines
    assert lines.count("  (none)") == 3 and "dtmf" not in lines


def test_an_unknown_id_is_one_line_and_exit_1(db: str, capsys) -> None:
    store_records(db, live_record("c1"))
    code, lines, err = run(capsys, "calls", "show", "nope")
    assert (code, lines, err) == (1, [], "ari-realtime: no call with id 'nope'\n")


def test_no_database_yet_is_one_line_and_nothing_is_created(db: str, capsys, tmp_path) -> None:
    code, lines, err = run(capsys, "calls")
    assert code == 1 and lines == []
    assert err.startswith("ari-realtime: DATABASE_URL: there is no SQLite database at ")
    assert err.count("\n") == 1
    assert not (tmp_path / "calls.db").exists()


def test_a_bad_database_url_is_a_bad_setting(monkeypatch, capsys) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "mysql://u:hunter2x@db/calls")
    code, lines, err = run(capsys, "calls")
    assert code == 2 and lines == []
    assert err.startswith("ari-realtime: bad setting: DATABASE_URL: must start with sqlite://")
    assert "hunter2x" not in err and err.count("\n") == 1


def test_a_bad_prices_file_is_a_bad_setting(db: str, monkeypatch, capsys, tmp_path) -> None:
    store_records(db, live_record("c1"))
    (tmp_path / "prices.toml").write_text("[models.x\n")
    monkeypatch.setenv("PRICES_FILE", str(tmp_path / "prices.toml"))
    code, _, err = run(capsys, "calls")
    assert code == 2 and err.startswith("ari-realtime: bad setting: PRICES_FILE: ")


def test_limit_must_be_sensible(db: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["calls", "--limit", "0"])
    assert caught.value.code == 2
    assert "must be a whole number from 1 to 1000" in capsys.readouterr().err


def test_run_stops_at_start_with_one_line_when_the_store_is_unreachable(
    monkeypatch, capsys
) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    url = f"postgresql://calls:pw-secret-9@127.0.0.1:{free_port()}/calls"
    monkeypatch.setenv("DATABASE_URL", url)
    code, lines, err = run(capsys, "run")
    assert code == 1 and lines == []
    assert err.startswith("ari-realtime: DATABASE_URL: cannot connect to PostgreSQL at ")
    assert "pw-secret-9" not in err and err.count("\n") == 1
