"""What a task in flight holds: the decoded message shares the received headers.

With 10,000 tasks in flight every per-task object counts (``bench/inflight.py``
measures it); these tests pin the shapes that keep it small.
"""

from __future__ import annotations

from asyncworker import protocol, serialization


def test_decoded_message_shares_the_received_headers() -> None:
    message = protocol.encode_v2("t.add", (1, 2))
    headers = dict(message.headers)
    decoded = protocol.decode(message.body, headers, message.content_type,
                              message.content_encoding, serialization.accepted(["json"]))
    assert decoded.headers is headers
