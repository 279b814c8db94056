"""The server's SHA-256 of stored files, re-hashed there: the one loop over sums pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastxfer.client.listing import is_text
from fastxfer.errors import ProtocolError
from fastxfer.protocol import messages

REQUEST = 2000  # paths one sums request names (the server takes no more)
STATUSES = ("ok", "changed", "missing")


def sums_pages(call: Callable[[dict, str], dict], names: list[str]) -> Iterator[tuple[list[dict], int]]:
    """The server's answers for *names*, in order, a page at a time (*call*: the
    control connection's), each with
    the bytes of the next name the server has re-hashed already.  A page ends
    where the server's re-hashing budget did (serve --hash-per-reply), in the
    middle of a file if need be, so no reply waits on more than that; the next
    request starts at the first name not answered, and the server goes on
    where it stopped.  A server from before pages answers every name at once."""
    start = done = 0
    while start < len(names):
        asked = names[start : start + REQUEST]
        reply = call({"t": "sums", "paths": asked, "page": True}, "sums_ok")
        page = [checked(a) for a in messages.page_answers(reply, len(asked), least=0)]
        before, done = done, messages.get_int(reply, "done") if reply.get("next") is not None else 0
        if not page and done <= before:
            raise ProtocolError("the server's sums page answered nothing and hashed nothing more")
        start += len(page)
        yield page, done


def checked(answer: Any) -> dict:
    """One answer with the fields sums prints, or ProtocolError."""
    answer = messages.get_obj(answer)
    if not is_text(messages.get_str(answer, "path")):
        raise ProtocolError("the server's sums answer names a path no file can have")
    if answer.get("status") not in STATUSES:
        raise ProtocolError("the server's sums answer has an unknown status")
    if answer["status"] == "ok":
        messages.get_hex(answer, "sha256", 32)
    return answer
