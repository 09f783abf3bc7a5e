"""A client's own `x-forwarded-proto`, and only that, reaches the primary and the copy through Envoy.

Envoy's connection manager adds `x-forwarded-proto` ("http" or "https") to a call that has none, before
any filter runs, and keeps a client's own (the shim's listener does not use the remote address). A filter
cannot tell the one from the other afterwards; taking every `x-forwarded-proto` off took the client's own
too. So an early header mutation, which runs before the connection manager's, marks a call that comes
without one (`ABSENT`): the connection manager then leaves the mark as it is, and the first filter takes it
off, before the copy and the primary see the call. A call that had its own goes through untouched, each
value as the client sent it. A client's own `x-forwarded-proto` of the mark's value would be taken off.
"""

from __future__ import annotations

from typing import Any

HEADER = "x-forwarded-proto"
ABSENT = "x-shim-no-forwarded-proto"  # a call that came without one: no client sends this
_TYPES = "type.googleapis.com/"


def early_mutations() -> list[dict[str, Any]]:
    """The connection manager's `early_header_mutation_extensions`: the mark on a call without one."""
    return [
        {
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": _TYPES
                + "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [
                    {"append": {"header": {"key": HEADER, "value": ABSENT}, "append_action": "ADD_IF_ABSENT"}}
                ],
            },
        }
    ]


def unmark() -> dict[str, Any]:
    """The first HTTP filter: the mark taken off; skipped for every call that carries anything else (the
    client's own, as it sent it)."""
    remove = {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": _TYPES + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": HEADER}]},
        },
    }
    marked = {
        "single_predicate": {
            "input": {
                "name": "forwarded-proto",
                "typed_config": {
                    "@type": _TYPES + "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    "header_name": HEADER,
                },
            },
            "value_match": {"exact": ABSENT},
        }
    }
    skip = {
        "action": {
            "name": "skip",
            "typed_config": {
                "@type": _TYPES + "envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
            },
        }
    }
    return {
        "name": "shim.unmark_forwarded_proto",
        "typed_config": {
            "@type": _TYPES + "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": remove,
            "xds_matcher": {
                "matcher_list": {"matchers": [{"predicate": {"not_matcher": marked}, "on_match": skip}]}
            },
        },
    }
