"""The wire protocol, pure: frames, control messages, state machines, keys,
layout, paths and limits.  Nothing here touches a socket, a clock, a thread
or a disk (tests/unit/test_purity.py)."""
