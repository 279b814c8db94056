"""The PAKE of pairing: SPAKE2 (the `spake2` package, Brian Warner's, as
magic-wormhole uses), over Ed25519, with the client as side A.

Both fingerprints are SPAKE2's identities (idA the client's, idB the
server's certificate as the client saw it), so they enter the key itself;
the confirmation MACs (protocol/pairing) bind them once more with the name.
Imported only by pairing: the library costs ~45 ms to import.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fastxfer.errors import ProtocolError
from fastxfer.protocol.pairing import PAKE_MESSAGE


class Pake:
    """One side of one SPAKE2 run: start() once, then finish() once."""

    def __init__(self, client: bool, password: bytes, client_fp: bytes, server_fp: bytes,
                 entropy: Callable[[int], bytes] = os.urandom) -> None:
        from spake2 import SPAKE2_A, SPAKE2_B

        side = SPAKE2_A if client else SPAKE2_B
        self._spake = side(password, idA=client_fp, idB=server_fp, entropy_f=entropy)  # entropy: fixed in vectors
        self.outbound = self._spake.start()

    def finish(self, inbound: bytes) -> bytes:
        """The shared key; a malformed or reflected message is a protocol error.
        A wrong password is not detected here: the keys differ, and the
        confirmation MACs show it."""
        from spake2 import SPAKEError
        from spake2.ed25519_basic import NotOnCurve

        if len(inbound) != PAKE_MESSAGE:
            raise ProtocolError("malformed pairing message")
        try:
            return self._spake.finish(inbound)
        except (SPAKEError, NotOnCurve, ValueError, AssertionError) as exc:
            raise ProtocolError("malformed pairing message") from exc
