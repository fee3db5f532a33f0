"""A per-call memo so metrics that share intermediate maps (SSIM/SSIM_sum/MS-SSIM, VIF's pyramid
of F) compute them once inside ``compute_metrics``.

Why: speed without coupling the metric modules; outside ``shared_cache()`` nothing is cached.
Keys use ``id()`` of arrays, which is safe only while those arrays are alive — callers cache only
on the caller-held input arrays, never on temporaries.
"""

from __future__ import annotations

from contextlib import contextmanager

_store: dict | None = None


@contextmanager
def shared_cache():
    global _store
    old, _store = _store, {}
    try:
        yield
    finally:
        _store = old


def cached(key, compute):
    if _store is None:
        return compute()
    if key not in _store:
        _store[key] = compute()
    return _store[key]
