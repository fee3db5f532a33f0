"""Cancel inside a sampling step: checks that long computations call between their pieces.

Why: a host (ComfyUI) that only looks at its interrupt flag in the per-step progress callback waits for a whole
step, which at 2048 px on a CPU is close to a minute. The transformer calls `check()` between layers and between
attention chunks, the sampler between steps, the VAE between its blocks; each registered check raises to cancel
(ComfyUI's `throw_exception_if_processing_interrupted` raises InterruptProcessingException).

The library never imports a host: the host registers its check once (`register`); a caller or a test adds one
for the duration of a call with `watch`. `check()` is called thousands of times per step: with nothing
registered it costs a tuple and a thread-local lookup.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Check = Callable[[], None]

_registered: tuple[Check, ...] = ()
_lock = threading.Lock()
_local = threading.local()  # .watched: tuple of this thread's watch() checks


def register(fn: Check) -> None:
    """Call `fn` on every `check()`, in every thread, from now on (a host's interrupt check, registered at
    import). Registering the same function again does nothing."""
    global _registered
    with _lock:
        if fn not in _registered:
            _registered = (*_registered, fn)


def unregister(fn: Check) -> None:
    """Undo `register` (no error when fn is not registered)."""
    global _registered
    with _lock:
        _registered = tuple(f for f in _registered if f != fn)


@contextmanager
def watch(fn: Check) -> Iterator[None]:
    """Call `fn` on every `check()` made by this thread inside the `with` block (thread-local, so one caller's
    cancel never stops another thread's computation)."""
    before = getattr(_local, "watched", ())
    _local.watched = (*before, fn)
    try:
        yield
    finally:
        _local.watched = before


def check() -> None:
    """Run every registered and watched check; one of them raises to cancel the computation in progress."""
    for fn in _registered:
        fn()
    for fn in getattr(_local, "watched", ()):
        fn()
