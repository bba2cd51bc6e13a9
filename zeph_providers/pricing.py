"""Cost: a price for each call, running totals per provider, and budgets. Built on `zeph_providers.hooks`.

Prices come from `[llm.providers.pricing]` when a provider has it (USD per million tokens: input,
output, cache read, cache write), else from the `genai-prices` library (the optional extra `cost`:
`pip install zeph-providers[cost]`), which knows the hosted APIs' models and their price history.
A call whose price is unknown (a local or Ollama model without `pricing`, a model the library does
not know, the library not installed) has `resp.cost = None`: never a guessed zero.

Every backend reports `Usage` in one shape (see `types.Usage`): `input_tokens` are the uncached
input tokens, disjoint from `cache_read_tokens` and `cache_write_tokens`, so each field is priced
at its own rate with no per-backend correction. (Before, OpenAI's `input_tokens` included the
cached tokens and `price()` subtracted them: the price of a given API reply is unchanged.)
genai-prices counts cache tokens inside its `input_tokens`: it is given `usage.prompt_tokens`.

A reply replayed from the response cache (`zeph_providers.cache`; the call's attribute
`zeph.cache.hit`) costs 0.0 and adds no tokens to the totals (`ProviderTotals.cache_hits` counts
it): the reply it replays was charged when it was made.

Budgets: `budget_usd` on a provider (or on `[llm]` for the registry's total) refuses a call with
`BudgetExceededError` before it is sent once the spend so far has reached it. Calls already in
flight when the budget is reached still finish (and are counted).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from zeph_providers.errors import BudgetExceededError
from zeph_providers.hooks import Call, Hook

if TYPE_CHECKING:
    from zeph_providers.config.models import LlmConfig, PricingConfig
    from zeph_providers.types import Usage

__all__ = ["INPUT_EXCLUDES_CACHE", "CostTracker", "ProviderTotals", "price", "price_from_library"]

INPUT_EXCLUDES_CACHE = frozenset({"claude", "openai", "compatible", "ollama", "local", "mock", "router"})
"""Backends whose `input_tokens` leave out the cache reads and writes: since `Usage` has one meaning,
every built-in one (kept for compatibility; pricing no longer consults it)."""

_LIBRARY_PROVIDER = {"openai": "openai", "claude": "anthropic"}
"""Backend type -> genai-prices provider id. Other backends are priced only through their
`base_url` (a known host, e.g. api.groq.com) or by `pricing`: a local model is not free-by-guess."""

_MISSING: set[tuple[str, str | None, str | None]] = set()
_MISSING_LOCK = threading.Lock()


def price(usage: Usage, pricing: PricingConfig, *, backend: str = "") -> float:
    """The USD price of `usage` at `pricing`'s per-million rates (`backend` is kept for compatibility)."""
    uncached = usage.input_tokens
    read = pricing.cache_read if pricing.cache_read is not None else pricing.input
    write = pricing.cache_write if pricing.cache_write is not None else pricing.input
    micro = (
        uncached * pricing.input
        + usage.output_tokens * pricing.output
        + usage.cache_read_tokens * read
        + usage.cache_write_tokens * write
    )
    return micro / 1_000_000


def price_from_library(usage: Usage, model: str, *, backend: str, base_url: str | None = None) -> float | None:
    """The price genai-prices gives, or None (not installed, model or provider unknown)."""
    provider_id = None if base_url else _LIBRARY_PROVIDER.get(backend)
    if provider_id is None and base_url is None:
        return None
    key = (model, provider_id, base_url)
    if key in _MISSING:
        return None
    try:
        import genai_prices
    except ImportError:
        return None
    library_usage = genai_prices.Usage(
        input_tokens=usage.prompt_tokens,  # genai-prices counts cache tokens inside input
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    try:
        if provider_id is not None:
            result = genai_prices.calc_price(library_usage, model, provider_id=provider_id)
        else:
            result = genai_prices.calc_price(library_usage, model, provider_api_url=base_url)
    except LookupError:
        with _MISSING_LOCK:
            _MISSING.add(key)
        return None
    return float(result.total_price)


@dataclass
class ProviderTotals:
    """What one provider's calls have used and cost so far (JSON-ready through `as_dict()`)."""

    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    """The sum of the known prices."""
    unpriced_calls: int = 0
    """Calls with usage but no known price (their cost is not in `cost_usd`)."""
    cache_hits: int = 0
    """Calls answered by the response cache: counted in `calls`, their tokens and cost (0.0) not."""
    routed: bool = False
    """A router: its calls' usage and cost are its members' too (left out of the registry total)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_KEY = "zeph_providers.pricing"


class CostTracker(Hook):
    """Prices each call (`resp.cost`), keeps per-provider totals and enforces budgets.

    A registry makes one (`registry.costs`); it is thread-safe. A router's call costs what its
    members' calls cost (each member's call is priced with the member's own prices).
    """

    def __init__(self, config: LlmConfig | None = None) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._totals: dict[str, ProviderTotals] = {}

    # ----- reading ------------------------------------------------------------------

    def totals(self) -> dict[str, ProviderTotals]:
        """Per provider, a copy of its totals."""
        with self._lock:
            return {name: ProviderTotals(**asdict(t)) for name, t in self._totals.items()}

    def total_cost(self) -> float:
        """USD spent by every provider together (routers' calls counted once, through their members)."""
        with self._lock:
            return sum(t.cost_usd for t in self._totals.values() if not t.routed)

    def spent(self, provider: str) -> float:
        with self._lock:
            entry = self._totals.get(provider)
            return 0.0 if entry is None else entry.cost_usd

    def reset(self) -> None:
        with self._lock:
            self._totals.clear()

    # ----- configuration ------------------------------------------------------------

    def _entry(self, name: str) -> Any:
        return None if self._config is None else self._config.provider(name)

    def budget(self, provider: str) -> float | None:
        entry = self._entry(provider)
        return None if entry is None else entry.budget_usd

    # ----- hook ---------------------------------------------------------------------

    def before_request(self, call: Call) -> None:
        budget = self.budget(call.provider)
        if budget is not None:
            spent = self.spent(call.provider)
            if spent >= budget:
                raise BudgetExceededError(
                    f"budget of ${budget:.4f} spent (${spent:.4f} so far); call refused",
                    provider=call.provider,
                    budget_usd=budget,
                    spent_usd=spent,
                )
        total_budget = None if self._config is None else self._config.budget_usd
        if total_budget is not None:
            spent = self.total_cost()
            if spent >= total_budget:
                raise BudgetExceededError(
                    f"the registry's budget of ${total_budget:.4f} is spent (${spent:.4f} so far); call refused",
                    provider=call.provider,
                    budget_usd=total_budget,
                    spent_usd=spent,
                )

    def after_call(self, call: Call) -> None:
        if isinstance(call.error, BudgetExceededError) and not call.attempts:
            return  # refused here: nothing was sent
        hit = call.attributes.get("zeph.cache.hit") is True
        cost = 0.0 if hit else self._cost(call)  # a reply replayed from the response cache cost nothing
        call.cost = cost
        if call.response is not None:
            call.response.cost = cost
        parent = call.parent
        if parent is not None and cost is not None:
            with self._lock:
                parent.data[_KEY] = parent.data.get(_KEY, 0.0) + cost
        usage = call.response.usage if call.response is not None else call.usage
        with self._lock:
            totals = self._totals.setdefault(call.provider, ProviderTotals())
            totals.calls += 1
            totals.routed = totals.routed or call.children > 0
            if call.error is not None:
                totals.failed += 1
            if hit:
                totals.cache_hits += 1
            elif usage is not None:
                totals.input_tokens += usage.input_tokens
                totals.output_tokens += usage.output_tokens
                totals.cache_read_tokens += usage.cache_read_tokens
                totals.cache_write_tokens += usage.cache_write_tokens
            if cost is not None:
                totals.cost_usd += cost
            elif usage is not None and usage.total_tokens:
                totals.unpriced_calls += 1

    def _cost(self, call: Call) -> float | None:
        if call.children:
            # A router: what its members' calls cost (known only if some member's price was known).
            with self._lock:
                routed: float | None = call.data.get(_KEY)
            return routed
        response = call.response
        # A chat call's usage is its reply's; an embeddings call's is what its backend reported.
        usage = response.usage if response is not None else call.usage
        if usage is None or (response is None and call.operation != "embeddings"):
            return None
        entry = self._entry(call.provider)
        pricing = None if entry is None else entry.pricing
        if pricing is not None:
            return price(usage, pricing, backend=call.backend)
        if call.backend not in ("openai", "claude", "compatible"):
            return None  # local, Ollama, mock: no price without `pricing`
        model = (response.model if response is not None else "") or call.model
        base_url = None if entry is None else getattr(entry, "base_url", None)
        if call.backend == "openai" and base_url and "api.openai.com" in base_url:
            base_url = None
        return price_from_library(usage, model, backend=call.backend, base_url=base_url)
