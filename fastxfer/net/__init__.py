"""Sockets: connections with deadlines, TLS wrapping, buffers; the one place OSError becomes an error."""
