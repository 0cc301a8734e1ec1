"""The vision S3 client's tuning: same endpoints from a cache that hits, Expect only when large."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncworker.contrib.vision import s3, s3_tuning
from asyncworker.contrib.vision.settings import VisionSettings

SETTINGS = VisionSettings(s3_endpoint_url="http://127.0.0.1:9", s3_access_key_id="k",
                          s3_secret_access_key="s")


@pytest.fixture
async def clients() -> AsyncIterator[tuple[Any, Any]]:
    """A tuned client and a plain one (no request leaves: nothing listens on port 9)."""
    import aioboto3

    session = aioboto3.Session()
    async with (session.client("s3", **s3.client_options(SETTINGS, 4)) as tuned,
                session.client("s3", endpoint_url=SETTINGS.s3_endpoint_url,
                               region_name="us-east-1", aws_access_key_id="k",
                               aws_secret_access_key="s") as plain):
        s3_tuning.tune(tuned)
        yield tuned, plain


def test_parameters_read_are_those_the_rules_mention() -> None:
    rule_set = {
        "parameters": {"Bucket": {}, "Region": {}, "Key": {}, "Keyring": {}},
        "rules": [{"conditions": [{"fn": "isSet", "argv": [{"ref": "Bucket"}]}],
                   "endpoint": {"url": "https://{Region}.example"}}],
    }
    assert s3_tuning._parameters_read(rule_set) == {"Bucket", "Region"}


async def test_endpoint_cache_hits_across_keys_with_the_same_answer(
        clients: tuple[Any, Any]) -> None:
    tuned, plain = clients
    operation = tuned.meta.service_model.operation_model("PutObject")

    async def endpoint(client: Any, key: str) -> Any:
        return await client._ruleset_resolver.construct_endpoint(
            operation, {"Bucket": "bucket", "Key": key, "Body": b""}, {})

    first = await endpoint(tuned, "analysis/1.json")
    info = type(tuned._ruleset_resolver._provider).resolve_endpoint.cache_info()
    for n in range(2, 20):
        assert await endpoint(tuned, f"analysis/{n}.json") == first
    after = type(tuned._ruleset_resolver._provider).resolve_endpoint.cache_info()
    assert after.hits - info.hits == 18
    assert after.misses == info.misses
    assert await endpoint(plain, "analysis/1.json") == first
    assert first.url == "http://127.0.0.1:9/bucket"


async def test_config_skips_validation_and_optional_checksums(clients: tuple[Any, Any]) -> None:
    tuned, plain = clients
    assert type(plain._serializer).__name__ == "ParamValidationDecorator"
    assert type(tuned._serializer).__name__ != "ParamValidationDecorator"
    config = tuned.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"


@pytest.mark.parametrize(("size", "expect"), [(300, None), (2 << 20, "100-continue")])
async def test_expect_header_only_for_large_bodies(clients: tuple[Any, Any], size: int,
                                                   expect: str | None) -> None:
    tuned = clients[0]
    params: dict[str, Any] = {"body": io.BytesIO(b"x" * size), "headers": {}}
    await tuned.meta.events.emit(
        "before-call.s3.PutObject", model=tuned.meta.service_model.operation_model("PutObject"),
        params=params, request_signer=None, context={})
    assert params["headers"].get("Expect") == expect
    assert params["body"].tell() == 0


def test_unseekable_body_keeps_its_expect_header() -> None:
    class Stream:
        def read(self, n: int = -1) -> bytes:
            return b""

        def tell(self) -> int:
            raise OSError("not seekable")

    params = {"body": Stream(), "headers": {"Expect": "100-continue"}}
    s3_tuning._drop_small_expect(params)
    assert params["headers"] == {"Expect": "100-continue"}


@pytest.mark.parametrize("value", [
    "Mon, 30 Nov 2026 21:04:05 GMT", "2026-11-30T21:04:05.123Z", "2026-11-30T21:04:05+02:00",
    1796072645, "1796072645", "Mon, 30 Nov 2026 21:04:05 +0100",
])
def test_timestamps_parse_as_botocore_does(value: Any) -> None:
    from botocore.utils import parse_timestamp

    expected = parse_timestamp(value)
    got = s3_tuning.parse_timestamp(value)
    assert got == expected
    assert type(got.tzinfo) is type(expected.tzinfo)


async def test_user_agent_is_botocore_default_built_once() -> None:
    """The configured User-Agent is botocore's own string (session name, ua/2.1, retry
    mode, the session's extra once), so each call only joins it."""
    from aiobotocore.session import AioSession

    core = AioSession()
    options = s3.client_options(SETTINGS, 4, core)
    agent = options["config"].user_agent
    assert agent.startswith(f"aiobotocore/{core.user_agent_version} md/Botocore#")
    assert " ua/2.1 " in agent and "cfg/retry-mode#standard" in agent
    async with core.create_client("s3", **options) as client:
        captured: dict[str, str] = {}

        def capture(request: Any, **_: Any) -> None:
            captured["ua"] = request.headers["User-Agent"]
            raise RuntimeError("stop before sending")

        client.meta.events.register_last("request-created.s3", capture)
        with pytest.raises(RuntimeError, match="stop before sending"):
            await client.get_object(Bucket="bucket", Key="k")
    sent = captured["ua"]
    assert sent == f"{agent} {core.user_agent_extra}"
    assert sent.split().count(core.user_agent_extra) == 1
