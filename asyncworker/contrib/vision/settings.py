"""The vision plugin's settings section: S3 storage and an OpenAI-compatible API.

The keys keep their flat names (``s3_bucket = ...`` at the top of a TOML file,
``ASYNCWORKER_GPT_MODEL``) and may also be grouped under ``[vision]``. Read
them with ``app.settings.section(VisionSettings)``. Credentials left unset
fall back to the usual AWS credential chain and ``OPENAI_API_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...settings import SECRET, Section


@dataclass(slots=True)
class VisionSettings(Section):
    """Where the images live and which model classifies them."""

    section: ClassVar[str] = "vision"

    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "growbin-images"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, metadata=SECRET)
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    s3_max_attempts: int = 3
    gpt_base_url: str = "https://api.openai.com/v1"
    gpt_api_key: str | None = field(default=None, metadata=SECRET)
    gpt_model: str = "gpt-5"
    gpt_connect_timeout: float = 5.0
    gpt_timeout: float = 60.0
    gpt_max_retries: int = 5
    gpt_retry_backoff_max: float = 60.0
    gpt_image_mode: str = "data_url"  # or "presigned_url" (pipeline.IMAGE_MODES)
