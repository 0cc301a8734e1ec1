"""S3 paths and the few S3 calls the pipeline makes, on an aioboto3 client."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from . import s3_tuning
from .settings import VisionSettings

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class ObjectNotFound(LookupError):
    """The S3 object does not exist: a permanent failure, never retried."""


@dataclass(frozen=True, slots=True)
class S3Path:
    """``s3://bucket/key``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, value: str) -> S3Path:
        """Parse an ``s3://bucket/key`` URL; anything else is a ``ValueError``."""
        if not isinstance(value, str) or not value.startswith("s3://"):
            raise ValueError(f"not an s3:// path: {value!r}")
        bucket, _, key = value[len("s3://"):].partition("/")
        if not bucket or not key:
            raise ValueError(f"an s3:// path needs a bucket and a key: {value!r}")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def client_options(settings: VisionSettings, pool_size: int,
                   botocore_session: Any = None) -> dict[str, Any]:
    """Keyword arguments for ``session.client("s3", ...)``: explicit timeouts, a pool of
    ``pool_size`` connections, and none of the per-request work :mod:`.s3_tuning` skips
    (the User-Agent built once when given the ``botocore_session`` the client is of)."""
    from aiobotocore.config import AioConfig

    from .s3_session import StreamsSession, usable

    tuning: dict[str, Any] = dict(
        max_pool_connections=pool_size,
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        **s3_tuning.config_options(),
    )
    if botocore_session is not None:
        tuning["user_agent"] = s3_tuning.fixed_user_agent(botocore_session, AioConfig(**tuning))
    # aiohttp (aiobotocore's default) only where a proxy applies, which this session lacks.
    # Given here, not merged in: AioConfig.merge drops http_session_cls.
    session = {"http_session_cls": StreamsSession} if usable(settings.s3_endpoint_url) else {}
    config = AioConfig(**tuning, **session)
    options: dict[str, Any] = {"region_name": settings.s3_region, "config": config}
    if settings.s3_endpoint_url:
        options["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_access_key_id:
        options["aws_access_key_id"] = settings.s3_access_key_id
        options["aws_secret_access_key"] = settings.s3_secret_access_key
    return options


def content_type_for(key: str) -> str:
    """A MIME type guessed from the key's extension."""
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def is_missing(exc: ClientError) -> bool:
    """Whether an S3 error means the bucket or key does not exist."""
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES


async def get_bytes(client: Any, path: S3Path) -> tuple[bytes, str]:
    """The object's body and content type; :class:`ObjectNotFound` if it is missing."""
    try:
        response = await client.get_object(Bucket=path.bucket, Key=path.key)
        async with response["Body"] as body:
            data: bytes = await body.read()
    except ClientError as exc:
        if is_missing(exc):
            raise ObjectNotFound(f"{path} does not exist") from None
        raise
    content_type = response.get("ContentType") or content_type_for(path.key)
    return data, str(content_type)


async def ensure_exists(client: Any, path: S3Path) -> None:
    """:class:`ObjectNotFound` unless the object exists."""
    try:
        await client.head_object(Bucket=path.bucket, Key=path.key)
    except ClientError as exc:
        if is_missing(exc):
            raise ObjectNotFound(f"{path} does not exist") from None
        raise


async def put_bytes(client: Any, path: S3Path, body: bytes, content_type: str) -> None:
    """Store ``body`` at ``path``."""
    await client.put_object(Bucket=path.bucket, Key=path.key, Body=body, ContentType=content_type)


async def presigned_get_url(client: Any, path: S3Path, expires: int = 900) -> str:
    """A time-limited https URL the model's server can fetch the image from."""
    url: str = await client.generate_presigned_url(
        "get_object", Params={"Bucket": path.bucket, "Key": path.key}, ExpiresIn=expires)
    return url
