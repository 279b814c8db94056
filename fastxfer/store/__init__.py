"""The server's disk: facade.Store, composed of manifest, staging, commit, bundles, catalog and diskio; seam names what server/ calls."""
