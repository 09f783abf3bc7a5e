"""Noise: what Bank's answers differ at when it is asked the same twice, and which of BK's
differences that explains.

For some reads the shim asks Bank a second time (`[noise] reads`): what
differs between Bank's two answers is noise, not a fault of BK's. For each
path that BK's answers differ at, the report sets BK's rate (mismatched calls
with a real difference there / compared calls) against Bank's own rate there
(calls with a difference between Bank's two answers / calls asked twice). A
path is *noise* when Bank differs from itself there and BK is not clearly
worse: not both more than `absolute` above Bank's rate and more than
`relative` above it as a share. A mismatch whose real paths are all noise
counts as noise; any other mismatch is a *real mismatch*.

Bank's rate counts only once at least `min_sampled` of the method's calls
were asked twice: one read whose two answers differed would otherwise make
every one of BK's differences at that path noise, however many.

Bank's noise at a path excuses only BK differences of a kind its own two
answers showed there (`kind_class`): a clock Bank changes between its answers
(`changed`) excuses no BK answer that leaves the clock out (`removed`). A
field present in one answer and absent from the other is one kind, however
round: `added` and `removed` are both `presence`. So the report counts, and
classifies, each path once per kind of difference.

A header (`metadata.KEY`) is the service's more than the method's: a request
id or a trace id is stamped on every answer by one interceptor. Writes are
never asked twice, so their own rate at a header is never measured; where a
method has fewer than `min_sampled` calls asked twice, its rate at a header is
the service's: measured on all the service's calls asked twice, counting once
those reach `min_sampled`. A message path has no such stand-in: the same
field name in two methods' messages need not mean the same.
"""

from __future__ import annotations

from collections.abc import Iterable

from comparators import Difference, DiffKind
from shim.sinks import path_pattern

MIN_SAMPLED = 20  # calls of a method asked twice before Bank's rate at a path can excuse BK's
HEADER = "metadata."  # the paths of the answers' metadata (comparators' metadata differences)


def service_of(method: str) -> str:
    """The service of a stored method: "pkg.Svc" of "/pkg.Svc/Method"."""
    return method.lstrip("/").rpartition("/")[0]


def classify(
    bk_rate: float, noise_rate: float, *, relative: float, absolute: float, sampled: int, min_sampled: int
) -> str:
    """ "noise" when Bank differs from itself at the path, measured on at least `min_sampled` calls asked
    twice (`sampled`), and BK is not clearly worse; else "real"."""
    if sampled < min_sampled or noise_rate <= 0:
        return "real"
    if bk_rate - noise_rate > absolute and bk_rate > noise_rate * (1 + relative):
        return "real"
    return "noise"


PRESENCE = "presence"  # the kind of `added` and `removed` differences, for noise
_PRESENCE = (DiffKind.ADDED.value, DiffKind.REMOVED.value)


def kind_class(kind: str) -> str:
    """The kind a difference is matched on against Bank's noise: `presence` for a field present on one
    side only (`added`, `removed`: which side says nothing of a field sent now and then), else its kind."""
    return PRESENCE if kind in _PRESENCE else kind


def _mismatch_class(differences: Iterable[Difference], noise: set[tuple[str, str]]) -> str:
    """ "noise" when every real difference's (folded path, `kind_class`) is in `noise`; else "real"."""
    real = {
        (path_pattern(d.path), kind_class(d.kind.value)) for d in differences if not d.rule and not d.noise
    }
    return "noise" if real and real <= noise else "real"
