"""Check helpers for lesson notebooks: each raises CheckFailed with a readable first line."""

from __future__ import annotations

from typing import Any

import numpy as np


class CheckFailed(AssertionError):
    """A learner's result differs from the reference; the message says what and by how much."""


def _as_array(x: Any) -> np.ndarray:
    """Return x as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()  # numpy has no bfloat16
        return x.numpy()  # every other dtype keeps its precision
    return np.asarray(x)


def _fail(name: str, msg: str) -> None:
    raise CheckFailed(f"{name}: {msg}")


def check_shape(name: str, got: Any, expected: tuple[int, ...]) -> None:
    """Fail unless got has exactly the expected shape."""
    shape = tuple(_as_array(got).shape)
    if shape != tuple(expected):
        _fail(name, f"shape {shape}, expected {tuple(expected)}")


def check_close(name: str, got: Any, expected: Any, atol: float = 1e-5, rtol: float = 0.0) -> None:
    """Fail unless |got - expected| <= atol + rtol*|expected| elementwise (same shape)."""
    if got is None:
        _fail(name, "got None: did the function return its result?")
    g, e = _as_array(got), _as_array(expected)
    if g.shape != e.shape:
        _fail(name, f"shape {tuple(g.shape)}, expected {tuple(e.shape)}")
    if g.size == 0:
        return
    g64, e64 = g.astype(np.complex128 if np.iscomplexobj(g) else np.float64), e.astype(
        np.complex128 if np.iscomplexobj(e) else np.float64
    )
    if not np.all(np.isfinite(g64)):
        bad = np.argwhere(~np.isfinite(g64))[0]
        _fail(name, f"non-finite value {g64[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    err = np.abs(g64 - e64)
    allowed = atol + rtol * np.abs(e64)
    if np.any(err > allowed):
        i = np.unravel_index(int(np.argmax(err - allowed)), err.shape)
        idx = tuple(int(k) for k in i)
        n_bad = int(np.sum(err > allowed))
        _fail(
            name,
            f"max |diff| {err.max():.3g} > tolerance (atol={atol:g}, rtol={rtol:g}); "
            f"{n_bad} of {err.size} values differ, e.g. at index {idx}: "
            f"got {g64[idx]:.6g}, expected {e64[idx]:.6g}",
        )


def check_equal(name: str, got: Any, expected: Any) -> None:
    """Fail unless got == expected (lists, dicts, strings, ints, arrays compared exactly)."""
    if isinstance(expected, np.ndarray) or hasattr(expected, "detach"):
        g, e = _as_array(got), _as_array(expected)
        if g.shape != e.shape:
            _fail(name, f"shape {tuple(g.shape)}, expected {tuple(e.shape)}")
        if not np.array_equal(g, e):
            idx = tuple(int(k) for k in np.argwhere(g != e)[0])
            _fail(name, f"differs at index {idx}: got {g[idx]!r}, expected {e[idx]!r}")
        return
    if got == expected:
        return
    if got is None:
        _fail(name, "got None: did the function return its result?")
    if type(got) is not type(expected) and not (
        isinstance(got, (int, float)) and isinstance(expected, (int, float))
    ):
        _fail(name, f"got a {type(got).__name__}, expected a {type(expected).__name__}")
    if isinstance(expected, (list, tuple, str)):
        if len(got) != len(expected):
            _fail(name, f"length {len(got)}, expected {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                _fail(name, f"first difference at position {i}: got {g!r}, expected {e!r}")
    if isinstance(expected, dict):
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing:
            _fail(name, f"{len(missing)} keys missing, e.g. {missing[0]!r}")
        if extra:
            _fail(name, f"{len(extra)} unexpected keys, e.g. {extra[0]!r}")
        k = next(k for k in expected if got[k] != expected[k])
        _fail(name, f"value for {k!r} is {got[k]!r}, expected {expected[k]!r}")
    _fail(name, f"got {got!r}, expected {expected!r}")


def check_true(name: str, condition: bool, why: str) -> None:
    """Fail with `why` unless condition holds."""
    if not condition:
        _fail(name, why)
