"""The store keeps to its seam (store/seam.py): every operation the seam names
exists on Store (and on the file being received) with the same parameters,
so that server/ written against the seam runs on Store, and a second backend
written to the seam runs under server/."""

from __future__ import annotations

import inspect

import pytest

from fastxfer.store import seam
from fastxfer.store.facade import Store
from fastxfer.store.bundles import StagedBundle
from fastxfer.store.staging import StagingFile


def operations(protocol: type) -> list[str]:
    return [name for name, value in vars(protocol).items() if inspect.isfunction(value) and not name.startswith("_")]


def parameters(func: object) -> list[tuple[str, object, object, object]]:
    return [(p.name, p.kind, p.default, p.annotation) for p in inspect.signature(func).parameters.values()]


PAIRS = [(seam.StoreSeam, Store, name) for name in operations(seam.StoreSeam)] + [
    (seam.Receiving, StagingFile, name) for name in operations(seam.Receiving)] + [
    (seam.Bundling, StagedBundle, name) for name in operations(seam.Bundling)]


@pytest.mark.parametrize("protocol, backend, name", PAIRS, ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_the_backend_has_the_operation_with_the_same_parameters(protocol: type, backend: type, name: str) -> None:
    assert callable(getattr(backend, name, None)), f"{backend.__name__} lacks {name}"
    assert parameters(getattr(backend, name)) == parameters(getattr(protocol, name))
    want = inspect.signature(getattr(protocol, name)).return_annotation
    got = inspect.signature(getattr(backend, name)).return_annotation
    assert got == want or (name, got) in {("receive", "StagingFile"), ("stage_bundle", "StagedBundle")}


def test_the_seam_names_what_the_server_calls() -> None:
    assert set(operations(seam.StoreSeam)) >= {
        "open_put", "commit", "make_dir", "finish_dirs", "make_link", "probe_many", "stage_bundle",
        "stores_under", "listing", "version_listing", "read_chunk", "verify_stored", "receipt_body"}
    assert set(operations(seam.Receiving)) == {"write", "flush", "close"}
    assert set(operations(seam.Bundling)) == {"finish", "close"}


def test_the_check_sees_a_changed_parameter() -> None:
    class Other:
        def listing(self, client: str, prefix: str, before: bytes | None) -> tuple[list[dict], bytes | None]:
            raise NotImplementedError

    assert parameters(Other.listing) != parameters(seam.StoreSeam.listing)
