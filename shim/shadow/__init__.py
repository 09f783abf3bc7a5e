"""The shadow side: mirrored calls that never delay the primary.

The handler serving a client call asks the dispatcher for a `Mirror` and feeds
it the client's request messages as they arrive (without awaiting anything the
shadow does), then the primary's answer messages and its outcome. The mirror
calls the shadow upstream in a task of its own; when both the primary's and the
shadow's outcomes are known it hands an `Exchange` to the comparison pipeline.

Bounds: at most `max_in_flight` mirrored calls at once (beyond that a call is
not mirrored, and the exchange says so); a shadow call may take `timeout`
seconds after the primary answered, then it is cancelled and recorded as a
shadow timeout (a read's stream the client ended, within that time, once the
shadow sent as many answers as the primary had: `shim.shadow.watch`); at most
`max_capture` bytes of requests and answers are kept per exchange.

Order (`shim._lanes`). A call whose requests are one message takes one place
in the lanes of its keys, from its arrival until it is over on the shadow. A
client-streaming call (a batch: many requests, one answer) takes one place,
on the keys of all its messages, as its last message comes (or as the primary
answers, if that comes first): the primary has all of it then, and answers
after, so a call the client makes once it has the answer comes after it.
A bidi call (a session) takes one place per request message, with that
message's own keys, entered as the message arrives: so a long session holds
its keys only while a message of it is in flight, not for the whole session.
A message's place is released once the shadow shows it has got as far: its
j-th answer releases at most j messages, and no more than the primary had been
sent when it sent its own j-th answer (under parity both sides answer alike:
one answer per message releases message by message). A message the shadow's
answers do not release (one neither side answers) is released on hold while
the shadow has answered as much as the primary: `ordering.stream_hold` after
the primary answered past it, or, the primary answering nothing past it, the
shadow timeout after it was sent; every place is released when the call ends.

Causality. A write reaches the shadow only after the primary received it: its
first answer message, or its final status, came back. A write the primary
never received (UNAVAILABLE before any answer: connection refused, say) is not
sent to the shadow at all, and is recorded as such, never as a mismatch.

Crash safety. Before a write is sent, its intent and keys are written to the
store and committed (`shim.intents`); it is deleted once the write is judged.

With an id map (`[ids.KIND]`) or key aliases, a mirror also: orders a call
that names an id or alias with the calls on the key it stands for; rewrites
ids into the shadow's (`shim._translation`); learns the pairs minted by the
call from the two answers (message by message for streamed answers); and gives
the comparison the pairs of the ids in the answers. A write both sides did not
do alike marks its keys out of step (`shim.steps`); later mismatches on them
are `tainted` until the keys are verified in step (`shim.verify`).

The package, one concern a module:

- `dispatcher`: starts mirrors within the bounds, and what happens to calls that are not mirrored;
- `mirror`: one call's shadow half, from the client's first message to the exchange it hands over;
- `admission`: a call's keys, its sampling, its place in the lanes and its intent;
- `places`: its places in the lanes, and when they are released;
- `call`: the call to the shadow itself;
- `learning`: the ids it mints and names;
- `fate`: how it ends early, and what its record then says;
- `spans`: a request stream under way across a switch of modes, and the keys it marks;
- `capture`: the bytes kept for comparison;
- `kinds`: each method's kind, from the descriptors;
- `shared`: what every mirror of one shim shares.
"""
