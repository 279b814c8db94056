"""Deadlines and bounds the server enforces (seconds, counts, bytes).

Everything a peer can make the server wait for or hold is bounded here.
docs/PROTOCOL.md lists the same numbers.
"""

HANDSHAKE_DEADLINE = 10.0  # any single read or write before authentication
AUTH_DEADLINE = 10.0  # from TLS up to a verified client proof
OPENING_DEADLINE = 15.0  # whole opening of any connection, however its bytes trickle
UNAUTH_PER_ADDRESS = 32  # unauthenticated connections one address may hold per worker
UNAUTH_SHARE = 2  # a worker holds at most 1/2 of its slots in unauthenticated connections
CONTROL_IDLE = 600.0  # an authenticated control connection with nothing to say
STREAM_IDLE = 120.0  # a stream connection between frames
SESSION_TTL = 24 * 3600  # a ticket opens streams for this long
FLUSH_BYTES = 16 << 20  # received bytes a stream makes durable and acknowledges at once
FLUSH_IDLE = 0.2  # ... or after this long with nothing more to read
MAX_CONNECTIONS_PER_WORKER = 512  # slots of a worker (serve --connections lowers or raises it)
MIN_SLOTS, MAX_SLOTS = 8, 4096  # what serve --connections accepts
CONNECTIONS_PER_CLIENT = 32  # authenticated connections of one client name, per worker (each may hold two chunk buffers)
# Frame buffers (a received frame and its plaintext, a restore's answer and
# its sealed form), counted as each stream's largest; serve --frame-budget
# and --worker-frame-budget change the first two.
FRAME_BUDGET_PER_CLIENT = 256 << 20  # what one client name's streams may hold, per worker (31 streams of 4 MiB chunks)
FRAME_BUDGET_PER_WORKER = 1 << 30  # what all streams of a worker may hold
FRAME_BUDGET_MIN = 33 << 20  # the least either may be set to: a largest frame and its plaintext fit (32 MiB + 108 B)
FRAME_BUDGET_WAIT = 2.0  # a stream without room waits this long, then is refused (busy)
FRAME_BUDGET_FREE = 64 << 10  # buffers this small are not counted (a SYNC, a small bundle)
DRAIN_DEADLINE = 30.0  # SIGTERM: running connections get this long
STOP_DEADLINE = 3.0  # SIGINT: workers get this long before SIGKILL
ERROR_LINGER = 1.0  # after a stream's ERROR, what the peer still sends is read and dropped this long
COMMIT_FENCE_WAIT = 10.0  # a commit waits this long for streams still writing into its file
HEARTBEAT_INTERVAL = 0.5  # a worker's main loop tells the master it is alive this often
HEARTBEAT_LATE = 2.0  # a worker silent this long gets no new connection while another beats
WORKER_SILENCE = 10.0  # a worker silent this long (stopped, or stuck) is killed and replaced (serve --worker-timeout)
MIN_WORKER_SILENCE = 2.0  # the least --worker-timeout: four missed beats, not one late one
HANDOVER_WAIT = 1.0  # how long the master waits for a worker with room for a new connection
# Bytes of stored files one sums or --checksum probe reply re-hashes before it
# answers the files done so far and a cursor to the rest (serve --hash-per-reply):
# at a slow disk's 50 MiB/s about 5 s, far inside the client's reply timeout.
HASH_PER_REPLY = 256 << 20


def unauth_per_worker(slots: int) -> int:
    """Strangers a worker of *slots* slots holds at once: the other half stays
    free for connections that prove themselves, whatever many addresses send."""
    return max(1, slots // UNAUTH_SHARE)
