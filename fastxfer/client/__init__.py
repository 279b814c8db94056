"""The client engine: connecting, walking, planning and running send and get; it emits events, never prints."""
