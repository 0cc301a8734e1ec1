"""The waste-sorting question asked of the model, and the check of its answer.

Pure functions with no I/O, so the async task and the benchmark's synchronous
Celery twin build the same request and accept the same answers.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

CATEGORIES = ("plastic", "paper", "glass", "metal", "organic", "e-waste", "hazardous", "general")
RECYCLABLE = frozenset({"plastic", "paper", "glass", "metal", "e-waste"})

SYSTEM_PROMPT = (
    "You sort household waste from photos. Answer with one JSON object with the keys "
    '"category" (one of: ' + ", ".join(CATEGORIES) + '), "recyclable" (true or false), '
    '"confidence" (a number from 0 to 1) and "notes" (one short sentence of disposal advice).'
)
DEFAULT_QUESTION = "Which waste category is the object in this photo?"

#: A JSON schema for ``response_format``; servers that only know ``json_object`` ignore it.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": list(CATEGORIES)},
        "recyclable": {"type": "boolean"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "notes": {"type": "string"},
    },
    "required": ["category", "recyclable", "confidence", "notes"],
    "additionalProperties": False,
}

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class MalformedAnswer(ValueError):
    """The model's answer is not a valid classification; the raw answer is in the message."""

    def __init__(self, reason: str, raw: str = "") -> None:
        # Both in args, so a Celery client rebuilds the same exception from the result.
        super().__init__(reason, raw[:2000])
        self.reason = reason
        self.raw = raw[:2000]

    def __str__(self) -> str:
        return f"model answer rejected: {self.reason}; raw answer: {self.raw!r}"


@dataclass(frozen=True, slots=True)
class Classification:
    """A validated waste-sorting answer."""

    category: str
    recyclable: bool
    confidence: float
    notes: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in S3 and returned to the client."""
        return asdict(self)


def data_url(image: bytes, content_type: str) -> str:
    """The image inline, as the ``image_url`` of a chat message."""
    return f"data:{content_type};base64,{base64.b64encode(image).decode()}"


def analysis_record(classification: Classification, model: str, source: str,
                    target: str) -> dict[str, Any]:
    """What the analysis task stores in S3 and returns."""
    return {**classification.as_dict(), "model": model, "s3_path": source,
            "analysis_path": target}


def chat_request(model: str, image_url: str, question: str | None = None) -> dict[str, Any]:
    """The Chat Completions request body for one image (a data URL or an https URL)."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question or DEFAULT_QUESTION},
                    {"type": "image_url", "image_url": {"url": image_url}},
                ],
            },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "waste_classification", "schema": ANSWER_SCHEMA,
                            "strict": True},
        },
    }


def answer_text(completion: Any) -> str:
    """The assistant message's text from a Chat Completions response body."""
    raw = json.dumps(completion)[:2000] if not isinstance(completion, str) else completion
    try:
        choice = completion["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise MalformedAnswer("the response has no choices[0].message", raw) from None
    if message.get("refusal"):
        raise MalformedAnswer("the model refused", str(message["refusal"]))
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise MalformedAnswer("the message has no text content", raw)
    if choice.get("finish_reason") == "length":
        raise MalformedAnswer("the answer was cut off (finish_reason=length)", content)
    return content


def parse_answer(content: str) -> Classification:
    """Validate the model's JSON answer; anything off raises :class:`MalformedAnswer`."""
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedAnswer(f"not JSON ({exc})", content) from None
    if not isinstance(data, dict):
        raise MalformedAnswer("not a JSON object", content)
    missing = [key for key in ("category", "recyclable", "confidence", "notes") if key not in data]
    if missing:
        raise MalformedAnswer(f"missing keys {missing}", content)
    category = data["category"]
    if not isinstance(category, str) or category.strip().lower() not in CATEGORIES:
        raise MalformedAnswer(f"unknown category {category!r}", content)
    recyclable = data["recyclable"]
    if not isinstance(recyclable, bool):
        raise MalformedAnswer("recyclable is not a boolean", content)
    confidence = data["confidence"]
    if (isinstance(confidence, bool) or not isinstance(confidence, int | float)
            or not math.isfinite(confidence) or not 0 <= confidence <= 1):
        raise MalformedAnswer("confidence is not a number between 0 and 1", content)
    notes = data["notes"]
    if not isinstance(notes, str):
        raise MalformedAnswer("notes is not a string", content)
    return Classification(category.strip().lower(), recyclable, float(confidence), notes)
