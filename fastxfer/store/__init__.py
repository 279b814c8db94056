"""The server's storage: staging, commit and versions, bundles of small files, the catalog."""
