"""Who may use the gateway: keys (env and sha256), allowed providers, budgets, rate limits, body
and max_tokens limits, the loopback-only default, and no key in any log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.gateway.conftest import HANG_GUARD, Gateway, non_loopback_address, running_gateway
from zeph_providers import Registry
from zeph_providers.gateway import GatewaySettings
from zeph_providers.gateway._settings import hash_key

ENV_KEY = "zk-env-0123456789abcdef-gateway-secret"
HASHED_KEY = "zk-hashed-fedcba9876543210-gateway-secret"
BUDGET_KEY = "zk-budget-5555555555555555-gateway-secret"
RATE_KEY = "zk-rate-7777777777777777-gateway-secret"
HI = [{"role": "user", "content": "hi"}]

KEYS_TOML = f"""
[[llm.providers]]
name = "m"
type = "mock"
responses = ["one two three four five"]

[[llm.providers]]
name = "priced"
type = "mock"
responses = ["one two three four five"]
pricing = {{ input = 1000000, output = 1000000 }}   # $1 a token: the mock counts words

[llm.gateway]
max_body_bytes = 4096
max_tokens = 1000

[[llm.gateway.keys]]
name = "from-env"
key_env = "ZEPH_TEST_GATEWAY_KEY"

[[llm.gateway.keys]]
name = "only-m"
key_sha256 = "{hash_key(HASHED_KEY)}"
providers = ["m"]

[[llm.gateway.keys]]
name = "budgeted"
key_sha256 = "{hash_key(BUDGET_KEY)}"
budget_usd = 5

[[llm.gateway.keys]]
name = "rate"
key_sha256 = "{hash_key(RATE_KEY)}"
rpm = 1
"""


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    monkeypatch.setenv("ZEPH_TEST_GATEWAY_KEY", ENV_KEY)
    with running_gateway(Registry.from_toml_string(KEYS_TOML), access_log=True) as gateway:
        yield gateway


def _client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=HANG_GUARD)


def test_keys_from_env_and_sha256_are_accepted(keyed: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for key in (ENV_KEY, HASHED_KEY):
        with _client(keyed, key) as client:
            reply = client.chat.completions.create(model="m", messages=HI)
            assert reply.choices[0].message.content == "one two three four five"
            assert list(client.chat.completions.create(model="m", messages=HI, stream=True))
    # the Anthropic header works as well
    models = httpx.get(keyed.v1 + "/models", headers={"x-api-key": ENV_KEY}, timeout=HANG_GUARD)
    assert models.status_code == 200
    with _client(keyed, "zk-wrong-key") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=HI)
    assert "GET /v1/models" in caplog.text  # the access log ran ...
    for key in (ENV_KEY, HASHED_KEY):
        assert key not in caplog.text  # ... and no line names a key


def test_missing_or_wrong_key_is_401(keyed: Gateway) -> None:
    response = httpx.post(keyed.v1 + "/chat/completions", json={"model": "m", "messages": HI}, timeout=HANG_GUARD)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    with _client(keyed, "zk-not-a-key") as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        with pytest.raises(openai.AuthenticationError):
            client.embeddings.create(model="m", input="x")
    status = httpx.get(keyed.v1 + "/zeph/status", timeout=HANG_GUARD)
    assert status.status_code == 401


def test_key_limited_to_providers_is_forbidden_elsewhere(keyed: Gateway) -> None:
    with _client(keyed, HASHED_KEY) as client:
        assert [m.id for m in client.models.list().data] == ["m"]
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model="priced", messages=HI)
        assert info.value.status_code == 403
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "model"
    with _client(keyed, ENV_KEY) as client:
        assert [m.id for m in client.models.list().data] == ["m", "priced"]


def test_key_budget_is_spent_from_the_reply_cost(keyed: Gateway) -> None:
    with _client(keyed, BUDGET_KEY) as client:
        client.chat.completions.create(model="priced", messages=HI)  # 1 + 5 tokens at $1: $6 > $5
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="priced", messages=HI)
        assert isinstance(info.value.body, dict) and info.value.body["code"] == "insufficient_quota"
        assert "budget" in info.value.message
    assert keyed.ctx.spent("budgeted") == pytest.approx(6.0)
    with _client(keyed, ENV_KEY) as client:  # another key's spend is its own
        client.chat.completions.create(model="priced", messages=HI)


def test_key_rate_limit_is_429_with_retry_after(keyed: Gateway) -> None:
    import asyncio

    from zeph_providers.limits import RateLimiter

    try:
        asyncio.run(RateLimiter("probe", rpm=1, wait=False).acquire(0))
    except NotImplementedError:
        pytest.skip("zeph_providers.limits.RateLimiter is not implemented on this branch yet")
    with _client(keyed, RATE_KEY) as client:
        client.chat.completions.create(model="m", messages=HI)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=HI)
        assert int(info.value.response.headers["retry-after"]) >= 1


def test_body_over_the_limit_is_413(keyed: Gateway) -> None:
    with _client(keyed, ENV_KEY) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 10_000}])
    assert info.value.status_code == 413
    # a chunked body without Content-Length is counted as it arrives
    response = httpx.post(
        keyed.v1 + "/chat/completions",
        content=iter([b'{"model": "m", "messages": [], "pad": "', b"x" * 8000, b'"}']),
        headers={"authorization": f"Bearer {ENV_KEY}"},
        timeout=HANG_GUARD,
    )
    assert response.status_code == 413


def test_max_tokens_over_the_cap_is_400(keyed: Gateway) -> None:
    with _client(keyed, ENV_KEY) as client:
        for field in ("max_tokens", "max_completion_tokens"):
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model="m", messages=HI, **{field: 1001})  # type: ignore[call-overload]
            assert isinstance(info.value.body, dict) and info.value.body["param"] == field
        client.chat.completions.create(model="m", messages=HI, max_tokens=1000)


def test_without_keys_only_loopback_clients_are_served() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    registry = Registry.from_toml_string('[[llm.providers]]\nname = "m"\ntype = "mock"\n')
    with running_gateway(registry, host="0.0.0.0") as gateway:
        port = gateway.url.rsplit(":", 1)[1]
        local = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=HANG_GUARD)
        assert local.status_code == 200
        remote = httpx.get(f"http://{address}:{port}/v1/models", timeout=HANG_GUARD)
        assert remote.status_code == 403
        assert "loopback" in remote.json()["error"]["message"]
    registry = Registry.from_toml_string('[[llm.providers]]\nname = "m"\ntype = "mock"\n')
    with running_gateway(registry, GatewaySettings(allow_remote=True), host="0.0.0.0") as gateway:
        port = gateway.url.rsplit(":", 1)[1]
        assert httpx.get(f"http://{address}:{port}/v1/models", timeout=HANG_GUARD).status_code == 200


def test_an_unset_key_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from zeph_providers.errors import ConfigError

    monkeypatch.delenv("ZEPH_TEST_GATEWAY_KEY", raising=False)
    registry = Registry.from_toml_string(KEYS_TOML)
    with pytest.raises(ConfigError, match="ZEPH_TEST_GATEWAY_KEY"):
        GatewaySettings.from_config(registry.config.gateway)


def test_gateway_config_is_validated() -> None:
    from zeph_providers.errors import ConfigError

    base = '[[llm.providers]]\nname = "m"\ntype = "mock"\n'
    with pytest.raises(ConfigError, match="exactly one"):
        Registry.from_toml_string(base + '[[llm.gateway.keys]]\nname = "k"\n')
    with pytest.raises(ConfigError, match="unknown provider"):
        Registry.from_toml_string(base + '[[llm.gateway.keys]]\nname = "k"\nkey_env = "X"\nproviders = ["nope"]\n')
    with pytest.raises(ConfigError, match="unknown key"):
        Registry.from_toml_string(base + "[llm.gateway]\nmax_body = 1\n")


def test_status_command_with_a_key(keyed: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    from zeph_providers.cli import main

    assert main(["status", "--url", keyed.url, "--key-env", "ZEPH_TEST_GATEWAY_KEY", "--json"]) == 0
    assert "providers" in json.loads(capsys.readouterr().out)
    assert main(["status", "--url", keyed.url]) == 1  # no key: the gateway's 401, as one error line
    err = capsys.readouterr().err
    assert "HTTP 401" in err and ENV_KEY not in err


def test_an_unknown_client_is_refused_before_its_body_is_read(keyed: Gateway) -> None:
    # a body far over the limit, without a key: 401 (not 413): nothing was read
    response = httpx.post(
        keyed.v1 + "/chat/completions", content=b"x" * 20_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


def test_cors_is_off_by_default_and_on_for_listed_origins() -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    registry = Registry.from_toml_string('[[llm.providers]]\nname = "m"\ntype = "mock"\n')
    with running_gateway(registry) as gateway:
        response = httpx.options(gateway.v1 + "/chat/completions", headers=preflight, timeout=HANG_GUARD)
        assert "access-control-allow-origin" not in response.headers
    registry = Registry.from_toml_string('[[llm.providers]]\nname = "m"\ntype = "mock"\n')
    with running_gateway(registry, GatewaySettings(cors_origins=("https://app.example",))) as gateway:
        response = httpx.options(gateway.v1 + "/chat/completions", headers=preflight, timeout=HANG_GUARD)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
