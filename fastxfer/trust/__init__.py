"""Who trusts whom: this machine's identity, pinned servers (client), authorized clients (server), receipts."""
