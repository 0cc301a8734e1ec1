"""One message published under many task ids: the template, and AMQP's spliced encoding."""

from __future__ import annotations

from typing import Any

import pytest

from asyncworker import App, protocol
from asyncworker.broker.amqp import SplicedProperties, properties
from asyncworker.hooks import WorkerHooks
from asyncworker.message import TaskMessage

IDS = ["d2f1c6a0-1b7e-5c0a-9e55-7b1c0f3a9d21", "00000000-0000-0000-0000-000000000000"]


def _message(**options: Any) -> protocol.OutgoingMessage:
    message = TaskMessage.from_options("pkg.tick", [1, "two"], {"k": {"nested": [3]}}, options)
    message.reply_to = "reply.1"
    return protocol.encode(message, "json")


@pytest.mark.parametrize("own_root", [True, False])
def test_template_fill_puts_the_id_where_the_message_holds_it(own_root: bool) -> None:
    message = _message(**({} if own_root else {"root_id": "the-root", "parent_id": "p"}))
    template = protocol.MessageTemplate.of(message, own_root)
    assert template.placeholder != message.correlation_id
    filled = template.fill(IDS[0])
    assert filled.headers["id"] == filled.correlation_id == IDS[0]
    assert filled.headers["root_id"] == (IDS[0] if own_root else "the-root")
    assert filled.body == message.body
    # Everything else is the message's own, and the message is untouched.
    same = {k: v for k, v in message.headers.items() if k not in ("id", "root_id")}
    assert {k: v for k, v in filled.headers.items() if k not in ("id", "root_id")} == same
    assert message.headers["id"] == message.correlation_id != IDS[0]


@pytest.mark.parametrize("options", [
    {},
    {"root_id": "the-root", "priority": 7, "headers": {"x": [1, {"y": None}]}},
    {"expires": 30, "time_limit": 5, "soft_time_limit": 2},
])
def test_spliced_properties_encode_as_the_filled_message(options: dict[str, Any]) -> None:
    message = _message(**options)
    if "expires" in options:
        message.expiration_ms = 30_000
    template = protocol.MessageTemplate.of(message, own_root="root_id" not in options)
    for task_id in IDS:
        spliced = SplicedProperties(template, task_id.encode())
        assert spliced.marshal() == properties(template.fill(task_id)).marshal()
        assert spliced.message_id == task_id
    # Encoded once, for every copy.
    assert len(template.encodings["amqp"]) >= 3


def test_spliced_properties_decode_to_the_filled_message() -> None:
    from pamqp import frame, header

    template = protocol.MessageTemplate.of(_message(priority=3), own_root=True)
    content = header.ContentHeader(body_size=len(template.message.body),
                                   properties=SplicedProperties(template, IDS[0].encode()))
    _, _, decoded = frame.unmarshal(frame.marshal(content, 1))
    assert isinstance(decoded, header.ContentHeader)
    props = decoded.properties
    filled = template.fill(IDS[0])
    assert props.correlation_id == props.message_id == IDS[0]
    assert props.headers is not None and props.headers["id"] == IDS[0]
    assert props.headers["root_id"] == IDS[0]
    assert props.headers["argsrepr"] == filled.headers["argsrepr"]
    assert (props.priority, props.delivery_mode, props.reply_to) == (3, 2, "reply.1")


class _Sent(WorkerHooks):
    def __init__(self) -> None:
        self.sent: list[protocol.OutgoingMessage] = []

    def task_sent(self, message: protocol.OutgoingMessage, exchange: str,
                  routing_key: str) -> None:
        self.sent.append(message)


async def test_prepared_send_publishes_each_copy_under_its_id() -> None:
    app = App("copies", broker_url="memory://copies", result_backend="cache+memory://")
    sent = _Sent()
    app.hooks.add(sent)
    prepared = app.prepare("pkg.tick", [1], {}, queue="copies")
    for task_id in IDS:
        handle = await prepared.send(task_id)
        assert handle.id == task_id
    first = await prepared.send()
    broker = await app.get_broker()
    got = [await broker.get("copies") for _ in range(3)]
    ids = [d.headers["id"] for d in got if d is not None]
    assert ids == [*IDS, first.id]
    assert [m.headers["id"] for m in sent.sent] == ids
    assert all(d is not None and d.correlation_id == d.headers["id"] for d in got)
    await app.close()


@pytest.mark.parametrize("task_id", [IDS[0], "short-id", "é" * 36])
async def test_amqp_publish_copy_splices_only_an_id_of_the_placeholders_length(
        task_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncworker.broker.amqp import AmqpBroker

    broker = AmqpBroker("amqp://guest:guest@127.0.0.1:1//", 0, 1.0)
    published: list[tuple[bytes, Any]] = []

    async def publish(exchange: str, routing_key: str, body: bytes, props: Any) -> None:
        published.append((body, props))

    monkeypatch.setattr(broker, "_publish", publish)
    template = protocol.MessageTemplate.of(_message(), own_root=True)
    await broker.publish_copy("", "q", template, task_id)
    (body, props), = published
    assert body == template.message.body
    assert isinstance(props, SplicedProperties) == (task_id == IDS[0])
    assert props.marshal() == properties(template.fill(task_id)).marshal()
