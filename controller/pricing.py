"""What a call cost: model prices per million tokens, and the arithmetic (pure).

The built-in table (:data:`DEFAULT_MODEL_PRICES`) holds OpenAI's list prices
of the realtime models as of :data:`PRICES_AS_OF`. Prices change: an
operator can replace or add entries with a TOML file named by
``PRICES_FILE`` (USD per 1M tokens, every key required)::

    [models."gpt-realtime"]
    text_in = 4.00
    cached_text_in = 0.40
    text_out = 16.00
    audio_in = 32.00
    cached_audio_in = 0.40
    audio_out = 64.00

Model names match by the longest entry that is the whole name or a prefix
followed by ``-``: ``gpt-realtime-2025-08-28`` is priced as
``gpt-realtime``, never as ``gpt-realtime-2``. A model without an entry
(e.g. an Azure deployment name) costs 0 and is reported as unpriced, so the
caller can warn once.

Pure: no clock, no network; only :func:`load_prices` reads the file it is given.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.errors import ConfigError
from controller.records import UsageTotals

#: When the built-in prices were last checked against OpenAI's price list.
PRICES_AS_OF = "2026-11-29"
_PER_TOKEN = 1e-6  # prices are per 1M tokens


class ModelPrices(BaseModel):
    """A model's prices in USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_in: float = Field(ge=0)
    cached_text_in: float = Field(ge=0)
    text_out: float = Field(ge=0)
    audio_in: float = Field(ge=0)
    cached_audio_in: float = Field(ge=0)
    audio_out: float = Field(ge=0)


# OpenAI's list prices, USD per 1M tokens, as of 2026-11-29 (PRICES_AS_OF).
_REALTIME = ModelPrices(
    text_in=4.00,
    cached_text_in=0.40,
    text_out=16.00,
    audio_in=32.00,
    cached_audio_in=0.40,
    audio_out=64.00,
)
_REALTIME_MINI = ModelPrices(
    text_in=0.60,
    cached_text_in=0.06,
    text_out=2.40,
    audio_in=10.00,
    cached_audio_in=0.30,
    audio_out=20.00,
)
DEFAULT_MODEL_PRICES: Mapping[str, ModelPrices] = MappingProxyType(
    {
        "gpt-realtime": _REALTIME,
        "gpt-realtime-1.5": _REALTIME,
        "gpt-realtime-2": _REALTIME,
        "gpt-realtime-mini": _REALTIME_MINI,
        "gpt-realtime-2.1-mini": _REALTIME_MINI,
    }
)


class CostEstimate(NamedTuple):
    """What a call cost.

    Attributes:
        usd: the cost in US dollars (0.0 when the model has no price).
        priced_as: the table entry used, or None when the model is unknown.
    """

    usd: float
    priced_as: str | None

    @property
    def priced(self) -> bool:
        """False when the model has no entry in the table (``usd`` is then 0)."""
        return self.priced_as is not None


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name.

    Attributes:
        models: the entries, by the name (or name prefix) they price.
        source: where they came from, for messages (``built-in (date)`` or a file).
    """

    models: Mapping[str, ModelPrices]
    source: str = f"built-in ({PRICES_AS_OF})"

    def lookup(self, model: str) -> str | None:
        """The entry pricing ``model``: the longest that is it or a prefix of it up to a ``-``."""
        best: str | None = None
        for name in self.models:
            if (model == name or model.startswith(name + "-")) and (
                best is None or len(name) > len(best)
            ):
                best = name
        return best

    def estimate(self, model: str, usage: UsageTotals) -> CostEstimate:
        """What ``usage`` of ``model`` cost; an unknown model costs 0 (``priced`` False)."""
        name = self.lookup(model)
        if name is None:
            return CostEstimate(0.0, None)
        return CostEstimate(usage_cost(self.models[name], usage), name)


DEFAULT_PRICES = PriceTable(DEFAULT_MODEL_PRICES)


def cached_split(usage: UsageTotals) -> tuple[int, int]:
    """``(cached audio, cached text)`` input tokens.

    From ``cached_tokens_details`` when the usage has it; otherwise
    ``input_cached_tokens`` is shared in proportion to the audio and text
    input (an estimate). Never more than the input of that kind.
    """
    audio_in = max(usage.input_audio_tokens, 0)
    text_in = max(usage.input_text_tokens, 0)
    if usage.input_cached_audio_tokens or usage.input_cached_text_tokens:
        audio, text = usage.input_cached_audio_tokens, usage.input_cached_text_tokens
    else:
        cached = max(usage.input_cached_tokens, 0)
        total = audio_in + text_in
        audio = round(cached * audio_in / total) if total else 0
        text = cached - audio
    return min(max(audio, 0), audio_in), min(max(text, 0), text_in)


def usage_cost(prices: ModelPrices, usage: UsageTotals) -> float:
    """USD for ``usage`` at ``prices``. Cached tokens count at the cached price only."""
    cached_audio, cached_text = cached_split(usage)
    per_million = (
        (max(usage.input_text_tokens, 0) - cached_text) * prices.text_in
        + cached_text * prices.cached_text_in
        + max(usage.output_text_tokens, 0) * prices.text_out
        + (max(usage.input_audio_tokens, 0) - cached_audio) * prices.audio_in
        + cached_audio * prices.cached_audio_in
        + max(usage.output_audio_tokens, 0) * prices.audio_out
    )
    return per_million * _PER_TOKEN


def cost_usd(model: str, usage: UsageTotals, table: PriceTable = DEFAULT_PRICES) -> float:
    """USD for ``usage`` of ``model``; 0.0 for a model ``table`` does not price.

    Use :meth:`PriceTable.estimate` to learn whether the model was priced.
    """
    return table.estimate(model, usage).usd


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrices] = Field(default_factory=dict)


def parse_prices(
    text: str,
    *,
    source: str,
    base: Mapping[str, ModelPrices] = DEFAULT_MODEL_PRICES,
) -> PriceTable:
    """A table of ``base`` with the entries of the TOML ``text`` replacing or adding to it.

    Args:
        text: the file's content.
        source: the file's name, for messages.
        base: the entries the file amends.

    Raises:
        ConfigError: ``PRICES_FILE: <file>: <where>: <what is wrong>``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"PRICES_FILE: {source} is not valid TOML: {exc}") from None
    try:
        parsed = _PriceFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
            msg = 'unknown table; prices go in [models."MODEL"] tables'
        elif first["type"] == "extra_forbidden":
            msg = (
                "unknown key; the keys are text_in, cached_text_in, text_out, "
                "audio_in, cached_audio_in, audio_out"
            )
        raise ConfigError(f"PRICES_FILE: {source}: {where}: {msg}") from None
    empty = [name for name in parsed.models if not name.strip()]
    if empty:
        raise ConfigError(f"PRICES_FILE: {source}: models: a model name is empty")
    return PriceTable({**base, **parsed.models}, source=source)


def load_prices(path: str | Path | None) -> PriceTable:
    """The built-in table amended by the ``PRICES_FILE`` at ``path`` (none: built-in only).

    Raises:
        ConfigError: the file cannot be read or is invalid; one line naming it.
    """
    if not path:
        return DEFAULT_PRICES
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"PRICES_FILE: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"PRICES_FILE: {path} is not UTF-8 text") from None
    return parse_prices(text, source=str(path))
