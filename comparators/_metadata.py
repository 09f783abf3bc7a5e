"""The answers' metadata compared: what Bank sends its clients besides messages and status.

A client may read response metadata (an `etag`, a `x-next-page` token, a rate limit left): BK leaving
one out, or sending another value, is a difference the client would notice. Each key Bank sends, in its
initial or trailing metadata, is compared with BK's values for it, at `metadata.KEY`:

- a key Bank sends and BK does not is `removed`; a value that differs is `changed` (a key sent several
  times compares its values in order);
- a key only BK sends is not compared: a client does not read what Bank never sent;
- BK's ids in a text value, as whole words, read as the Bank ids they pair with (`location:
  /trades/trd_9` is Bank's `/trades/T5`), as in status details (comparators.ids.text_reads_as);
- initial and trailing metadata are read as one: an answer that is only a status (gRPC's trailers-only
  form, common for errors) carries in its trailers what another server sends as headers;
- a key that may carry credentials (`set-cookie`, `authorization`, a name with `token`, `session`,
  `secret`, `auth`...) is compared by its presence alone: each side sends its own, and its value is
  never shown;
- gRPC's and HTTP's own keys are not the service's: `grpc-*` (rich error details, in
  `grpc-status-details-bin`, are compared on their own), `content-type`, `content-length`, `te`,
  `trailer`, `user-agent`, and what proxies add on the way: `date`, `server`, `via`, `alt-svc`,
  `strict-transport-security`, `x-envoy-*`.

A rule whose target is `metadata = "KEY-GLOB"` tolerates a key's difference: `ignore` any, a value rule
(`string`, `custom`, ...) a changed value it accepts, value by value.
"""

from __future__ import annotations

from collections.abc import Callable

from comparators._model import Difference, DiffKind, Metadata, Outcome
from comparators.ids import text_reads_as
from comparators.redact import hidden
from comparators.rules import Ignore, RuleSet

# metadata that carries credentials: its value is never shown, stored nor recorded
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-amz-security-token"}
)
_SECRET_WORDS = ("auth", "token", "secret", "passw", "session", "cookie", "credential", "apikey", "api-key")
HIDDEN = "<not shown: the key may carry credentials>"


def carries_credentials(name: str) -> bool:
    """Whether metadata of this name may carry credentials (never shown, stored nor recorded)."""
    spelled = name.lower().replace("_", "-")
    return spelled in _SECRET_HEADERS or any(word in spelled for word in _SECRET_WORDS)


NOT_COMPARED = frozenset(
    {
        "content-type",
        "content-length",
        "te",
        "trailer",
        "user-agent",
        "date",
        "server",
        "via",
        "alt-svc",
        "strict-transport-security",
    }
)
NOT_COMPARED_PREFIXES = ("grpc-", "x-envoy-", ":")
_PREFIX = "metadata."

Values = tuple[str | bytes, ...]


def compared(metadata: Metadata) -> dict[str, Values]:
    """The keys of one side's metadata that are compared, each with its values in order."""
    out: dict[str, list[str | bytes]] = {}
    for key, value in metadata:
        name = key.lower()
        if name in NOT_COMPARED or name.startswith(NOT_COMPARED_PREFIXES):
            continue
        out.setdefault(name, []).append(value)
    return {k: tuple(v) for k, v in out.items()}


def of(outcome: Outcome) -> dict[str, Values]:
    """An answer's compared metadata, initial and trailing as one."""
    return compared((*outcome.initial_metadata, *outcome.trailing_metadata))


def differences(
    method: str,
    bank: Outcome,
    bk: Outcome,
    rules: RuleSet,
    redacting: bool = False,
    scrub: Callable[[str], str] | None = None,
    to_bank: dict[tuple[str, str], str] | None = None,
) -> list[Difference]:
    """The differences between the metadata Bank sent and BK's, each tolerated by its key's rule if it is.
    BK's ids in text values, as whole words, are read as the Bank ids they pair with (`to_bank`, the
    exchange's pairs), as in status details. With `redacting`, binary values show only their size, and
    `scrub` hashes the values of redacted fields quoted in text values (`comparators.redact.FreeText`)."""
    theirs = of(bk)
    found: list[Difference] = []
    for key, values in of(bank).items():
        other = theirs.get(key)
        secret = carries_credentials(key)
        if other == values or (secret and other is not None):  # credentials: each side's own, if sent
            continue
        if other is not None and _reads_as(other, values, to_bank):
            continue
        rule = rules.metadata_rule(method, key)
        if other is None:
            tolerated = rule.name if isinstance(rule, Ignore) else ""
            kind = DiffKind.REMOVED
        else:
            tolerated = rule.name if rule is not None and _tolerated(rule, values, other) else ""
            kind = DiffKind.CHANGED
        shown = HIDDEN if secret else _shown(values, redacting, scrub)
        found.append(Difference(_PREFIX + key, kind, shown, _shown(other, redacting, scrub), tolerated))
    return found


def _reads_as(bk: Values, bank: Values, to_bank: dict[tuple[str, str], str] | None) -> bool:
    """Whether BK's values are Bank's once BK's ids in them are read as Bank's."""
    if not to_bank or len(bk) != len(bank):
        return False
    return all(
        b == a or (isinstance(b, str) and isinstance(a, str) and text_reads_as(b, a, to_bank))
        for b, a in zip(bk, bank, strict=True)
    )


def _tolerated(rule: Callable[[object, object], bool], bank: Values, bk: Values) -> bool:
    """Whether the rule accepts each of BK's values for Bank's; a rule that raises accepts nothing (as for
    a field: the difference stays real, and the comparison goes on)."""
    if isinstance(rule, Ignore):
        return True
    if len(bank) != len(bk):
        return False
    try:
        return all(rule(a, b) for a, b in zip(bank, bk, strict=True))
    except Exception:  # a custom rule's own failure on a value it did not expect
        return False


def _shown(
    values: Values | None, redacting: bool, scrub: Callable[[str], str] | None
) -> str | bytes | list[str | bytes | None] | None:
    """Values as a difference shows them: one value alone, several as a list."""
    if values is None:
        return None
    out: list[str | bytes | None] = []
    for value in values:
        if isinstance(value, bytes):
            out.append(hidden(value) if redacting else value)
        else:
            out.append(scrub(value) if scrub is not None else value)
    return out[0] if len(out) == 1 else out
