"""Pricing: the arithmetic, longest-prefix model names, and PRICES_FILE overrides."""

from __future__ import annotations

import pytest

from controller.errors import ConfigError
from controller.pricing import (
    DEFAULT_PRICES,
    PRICES_AS_OF,
    ModelPrices,
    PriceTable,
    cached_split,
    cost_usd,
    load_prices,
    parse_prices,
)
from controller.records import UsageTotals

ONE_MILLION = 1_000_000


@pytest.mark.parametrize(
    ("field", "usd"),
    [
        ("input_text_tokens", 4.00),
        ("output_text_tokens", 16.00),
        ("input_audio_tokens", 32.00),
        ("output_audio_tokens", 64.00),
    ],
)
def test_a_million_tokens_of_each_kind_cost_the_list_price(field: str, usd: float) -> None:
    usage = UsageTotals(**{field: ONE_MILLION})
    assert cost_usd("gpt-realtime", usage) == pytest.approx(usd)


def test_cached_tokens_are_part_of_the_input_and_cost_the_cached_price() -> None:
    usage = UsageTotals(
        input_audio_tokens=ONE_MILLION,
        input_cached_tokens=ONE_MILLION,
        input_cached_audio_tokens=ONE_MILLION,
    )
    assert cost_usd("gpt-realtime", usage) == pytest.approx(0.40)
    mini = UsageTotals(
        input_audio_tokens=2 * ONE_MILLION,
        input_text_tokens=ONE_MILLION,
        input_cached_tokens=2 * ONE_MILLION,
        input_cached_audio_tokens=ONE_MILLION,
        input_cached_text_tokens=ONE_MILLION,
    )
    # audio: 1M at 10 + 1M cached at 0.30; text: 1M cached at 0.06
    assert cost_usd("gpt-realtime-mini", mini) == pytest.approx(10.36)


def test_without_details_cached_tokens_are_shared_by_the_input_mix() -> None:
    usage = UsageTotals(input_audio_tokens=3000, input_text_tokens=1000, input_cached_tokens=400)
    assert cached_split(usage) == (300, 100)
    # Never more cached than input of that kind, even from odd counters.
    odd = UsageTotals(input_audio_tokens=10, input_cached_tokens=50, input_cached_audio_tokens=50)
    assert cached_split(odd) == (10, 0)
    assert cached_split(UsageTotals(input_cached_tokens=5)) == (0, 0)


def test_a_realistic_call() -> None:
    usage = UsageTotals(
        input_audio_tokens=12_000,
        input_text_tokens=3_000,
        input_cached_tokens=9_000,
        input_cached_audio_tokens=7_000,
        input_cached_text_tokens=2_000,
        output_audio_tokens=8_000,
        output_text_tokens=500,
    )
    expected = (
        5_000 * 32 + 7_000 * 0.40 + 1_000 * 4 + 2_000 * 0.40 + 8_000 * 64 + 500 * 16
    ) / ONE_MILLION
    assert cost_usd("gpt-realtime-2", usage) == pytest.approx(expected)
    assert expected == pytest.approx(0.6876)


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-realtime", "gpt-realtime"),
        ("gpt-realtime-2025-08-28", "gpt-realtime"),
        ("gpt-realtime-2", "gpt-realtime-2"),
        ("gpt-realtime-2-2026-06-01", "gpt-realtime-2"),
        ("gpt-realtime-1.5", "gpt-realtime-1.5"),
        ("gpt-realtime-mini", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
        ("gpt-realtime-2.1-mini", "gpt-realtime-2.1-mini"),
        ("gpt-realtime-2.1-mini-2026-09-01", "gpt-realtime-2.1-mini"),
        ("gpt-realtime-2.1", "gpt-realtime"),
    ],
)
def test_model_names_match_the_longest_entry_up_to_a_dash(model: str, entry: str) -> None:
    assert DEFAULT_PRICES.lookup(model) == entry


@pytest.mark.parametrize("model", ["my-azure-deployment", "gpt-realtimeX", "", "gpt-4o"])
def test_an_unknown_model_costs_nothing_and_says_so(model: str) -> None:
    usage = UsageTotals(input_audio_tokens=ONE_MILLION)
    estimate = DEFAULT_PRICES.estimate(model, usage)
    assert estimate.usd == 0.0 and not estimate.priced and estimate.priced_as is None
    assert cost_usd(model, usage) == 0.0
    assert DEFAULT_PRICES.estimate("gpt-realtime", usage).priced


def test_the_built_in_prices_are_dated() -> None:
    assert DEFAULT_PRICES.source == f"built-in ({PRICES_AS_OF})"
    mini = DEFAULT_PRICES.models["gpt-realtime-2.1-mini"]
    assert (mini.audio_in, mini.cached_audio_in, mini.audio_out) == (10, 0.30, 20)
    assert (mini.text_in, mini.cached_text_in, mini.text_out) == (0.6, 0.06, 2.4)


PRICE_FILE = """
# Our negotiated prices
[models."gpt-realtime"]
text_in = 2
cached_text_in = 0.2
text_out = 8
audio_in = 16
cached_audio_in = 0.2
audio_out = 32

[models."my-azure-deployment"]
text_in = 4
cached_text_in = 0.4
text_out = 16
audio_in = 32
cached_audio_in = 0.4
audio_out = 64
"""


def test_a_prices_file_replaces_and_adds_entries(tmp_path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(PRICE_FILE)
    table = load_prices(str(path))
    usage = UsageTotals(output_audio_tokens=ONE_MILLION)
    assert table.source == str(path)
    assert cost_usd("gpt-realtime-2025-08-28", usage, table) == pytest.approx(32)
    assert cost_usd("my-azure-deployment", usage, table) == pytest.approx(64)
    assert cost_usd("gpt-realtime-mini", usage, table) == pytest.approx(20)  # built-in kept
    assert load_prices("") is DEFAULT_PRICES and load_prices(None) is DEFAULT_PRICES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[models.x\n", r"prices.toml is not valid TOML"),
        ('[models."m"]\ntext_in = 1\n', r"prices.toml: models.m.cached_text_in: Field required"),
        (
            '[models."m"]\n' + "".join(f"{k} = 1\n" for k in ModelPrices.model_fields) + "x = 1\n",
            r"models.m.x: unknown key; the keys are text_in",
        ),
        (
            '[models."m"]\n'
            + "".join(f"{k} = 1\n" for k in ModelPrices.model_fields).replace(
                "text_in = 1", "text_in = -1", 1
            ),
            r"models.m.text_in: Input should be greater than or equal to 0",
        ),
        ('[prices."m"]\n', r"prices: unknown table; prices go in \[models"),
        (
            '[models."m"]\n' + "".join(f'{k} = "a"\n' for k in ModelPrices.model_fields),
            "valid number",
        ),
        (
            '[models.""]\n' + "".join(f"{k} = 1\n" for k in ModelPrices.model_fields),
            "name is empty",
        ),
    ],
)
def test_a_bad_prices_file_is_one_line_naming_the_problem(tmp_path, text: str, expected: str):
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^PRICES_FILE: .*" + expected) as caught:
        load_prices(path)
    assert "\n" not in str(caught.value)


def test_a_missing_prices_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="PRICES_FILE: cannot read .*nope.toml: No such file"):
        load_prices(tmp_path / "nope.toml")


def test_parse_prices_amends_the_table_it_is_given() -> None:
    one = ModelPrices(
        text_in=1, cached_text_in=1, text_out=1, audio_in=1, cached_audio_in=1, audio_out=1
    )
    table = parse_prices("", source="empty.toml", base={"m": one})
    assert table == PriceTable({"m": one}, source="empty.toml")
