"""Stream frames as typed events: one named tuple per kind, from an opened
frame's header and plaintext body.

Off the hot path, and apart from wire.py so that no command's start-up pays
for defining them: the server's handlers and the clients' loops parse the
fields they need in place (wire.parse_data_header before opening into a
buffer, wire.parse_bundle on a view); these are for code that takes any frame
and for the known-answer vectors.  Digests are not checked here: that is the
receiver's decision.
"""

from __future__ import annotations

from typing import NamedTuple

from fastxfer.errors import ProtocolError
from fastxfer.protocol import wire
from fastxfer.protocol.wire import (
    ACK, BUNDLE, BUNDLE_ACK, DATA, DATAS, ERROR, NAK, REQ, REQS, SYNC, TAG, ZEROS, Ask, BundleEntry,
    parse_acks, parse_bundle, parse_bundle_ack, parse_data_header, parse_datas, parse_error,
    parse_req, parse_reqs, parse_zeros,
)


class Data(NamedTuple):
    fid: bytes  # in a restore, the request's tag
    offset: int
    data: bytes | memoryview
    digest: bytes


class Ack(NamedTuple):
    entries: list[tuple[bytes, int]]


class Sync(NamedTuple):
    pass


class Error(NamedTuple):
    code: int
    message: str


class Bundle(NamedTuple):
    bundle: int
    entries: list[BundleEntry]
    snap: int  # the snapshot its files join, 0 for none


class BundleAck(NamedTuple):
    bundle: int
    statuses: list[tuple[int, int, str]]


class Req(NamedTuple):
    tag: bytes
    offset: int
    length: int
    size: int
    mtime_ns: int
    path: bytes


class Nak(NamedTuple):
    tag: bytes
    code: int
    message: str


class Reqs(NamedTuple):
    batch: int
    asks: list[Ask]


class Datas(NamedTuple):
    batch: int
    entries: list[tuple[bytes, int, int, memoryview]]


class Zeros(NamedTuple):
    tag: bytes
    offset: int
    length: int


Event = Data | Ack | Sync | Error | Bundle | BundleAck | Req | Nak | Reqs | Datas | Zeros


def parse_frame(kind: int, header: bytes, body: bytes | memoryview) -> Event:
    """The typed event of an opened frame; ProtocolError if it is malformed."""
    if kind == DATA:
        fid, offset, length = parse_data_header(header, len(body) + TAG)
        return Data(fid, offset, body[:length], bytes(body[length:]))
    if kind == ACK:
        return Ack(parse_acks(header, bytes(body)))
    if kind == SYNC:
        if header or body:
            raise ProtocolError("a SYNC frame carries nothing")
        return Sync()
    if kind == ERROR:
        return Error(*parse_error(bytes(body)))
    if kind == BUNDLE:
        return Bundle(*parse_bundle(header, memoryview(body)))
    if kind == BUNDLE_ACK:
        return BundleAck(*parse_bundle_ack(header, bytes(body)))
    if kind == REQ:
        return Req(*parse_req(header, bytes(body)))
    if kind == NAK:
        tag = wire.parse_nak_header(header)
        return Nak(tag, *parse_error(bytes(body)))
    if kind == REQS:
        return Reqs(*parse_reqs(header, bytes(body)))
    if kind == DATAS:
        return Datas(*parse_datas(header, memoryview(body)))
    if kind == ZEROS:
        return Zeros(*parse_zeros(header, body))
    raise ProtocolError(f"unknown frame kind {kind}")
