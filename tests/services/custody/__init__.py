"""A custody ledger with two implementations, Bank and BK, whose differences are the ones a shim gets wrong.

`custody.v1.Custody` (custody.proto, compiled when first imported: `messages.DESCRIPTOR_SET`,
`messages.REGISTRY`) keeps accounts, each known by the client's own reference (`client_ref`, the
same on both sides) and by an `account_id` the server mints. Money moves by `Deposit`, `Transfer`
and `Reverse` (which books the opposite of an earlier movement as a new movement); `Freeze` stops
an account from taking part in any movement. `GetAccountByRef`, `GetBalance`, `ListMovements`
(a server stream, oldest first) and `ListAccounts` (pages, by client_ref) are reads.

`server.serve("bank" | "bk", bugs=...)` serves one side on a free loopback port;
`workload.run_workload` drives clients; `workload.book_of` reads a side's whole book in a form
both sides share. `shim.toml` is the shim's config for this service.

Rules both sides share
----------------------
* Amounts are decimal strings, positive, with at most 3 decimals and at most 1e12; anything else
  is INVALID_ARGUMENT "amount must be a positive decimal with at most 3 decimal places". An
  amount is rounded to cents when booked, half-up (but see planted bug 1).
* Refusals and their status details (never an id in them, the same words on both sides):
  OpenAccount without client_ref: INVALID_ARGUMENT "client_ref is required"; with a client_ref in
  use: ALREADY_EXISTS "client ref already in use". An unknown account_id: NOT_FOUND "unknown
  account"; an unknown movement_id: NOT_FOUND "unknown movement"; an unknown client_ref:
  NOT_FOUND "unknown client ref" (but see planted bug 2).
* Refusals with rich details: FAILED_PRECONDITION with `grpc-status-details-bin`, a
  google.rpc.Status holding one google.rpc.PreconditionFailure violation whose `subject` is an
  id in the refusing side's own id space (Bank "A3", "M7"; BK "acc_…", "mv_…"):
  - a movement taking money from or bringing money to a frozen account (Deposit into it,
    Transfer from or to it, Reverse of a movement that touched it): "account is frozen",
    violation {type "FROZEN", subject: the frozen account_id (the paying one when both are),
    description "account is frozen"};
  - Reverse of a movement reversed already: "movement already reversed", {type
    "ALREADY_REVERSED", subject: the movement_id named, description "movement already reversed"};
  - Transfer (or Reverse) of more than the paying account holds: "insufficient funds", {type
    "INSUFFICIENT_FUNDS", subject: the paying account_id, description "insufficient funds"}.
  So the one field google.rpc.PreconditionFailure.Violation.subject holds ids of two kinds.
* A reversal of a movement from X to Y is a movement from Y to X of the same amount (a deposit's
  reversal takes the money out: to_account ""). Checks run in this order: the movement is known,
  not reversed already, no account frozen, enough money.

Benign differences between Bank and BK
--------------------------------------
A faithful rewrite has these; each is tolerated by a rule of shim.toml or by the shim's id map.

1. Ids. Bank mints account ids "A1", "A2", … and movement ids "M1", "M2", … (one counter each);
   BK mints "acc_" and "mv_" + 10 random lowercase hex digits. Fields holding ids:
   Account.account_id, Balance.account_id, Movement.movement_id/from_account/to_account, the
   requests' account_id/from_account/to_account/movement_id, and
   google.rpc.PreconditionFailure.Violation.subject in rich error details.
2. Decimals. Bank writes Account.balance, Balance.balance and Movement.amount with exactly two
   decimals ("100.50", "0.00"); BK without trailing zeros ("100.5", "0", "1000"). Always equal
   as decimals (unless a planted bug says otherwise).
3. Timestamps. Movement.booked_at comes from each side's own clock (Bank nanoseconds, BK
   microseconds), a few milliseconds apart.
4. Page tokens. AccountList.next_page_token: Bank's is the decimal offset of the next account
   ("7"); BK's the urlsafe base64 of the last client_ref returned. Each side takes only its own
   (INVALID_ARGUMENT "unknown page token" otherwise).

Planted bugs in BK
------------------
`serve("bk", bugs=...)` switches them on by name (all by default; `bugs=set()` is BK fixed).

1. "fee-rounding". Method: Transfer. Trigger: an amount of three decimals ending in 5 whose
   second decimal is even ("12.345", "7.105"): Bank rounds it half-up, BK half-even, so Bank
   books "12.35" and BK "12.34" (Movement.amount of the answer; "0.005" is booked "0.01" by Bank
   and refused by BK as INVALID_ARGUMENT, since it rounds to zero). Amounts ending in 5 after an
   odd digit, other three-decimal amounts, and every Deposit round alike. The cent shows
   wherever the movement or the two accounts' money appear later: Movement.amount of its Reverse
   and in ListMovements of either account, and Account.balance (GetAccountByRef, Freeze,
   ListAccounts) and Balance.balance (GetBalance) of both accounts from then on.
2. "wrong-code". Method: GetAccountByRef. Trigger: a client_ref never opened. Bank answers
   NOT_FOUND, BK INVALID_ARGUMENT; the details are "unknown client ref" on both.
3. "frozen-flag". Method: GetAccountByRef. Trigger: a frozen account. Account.frozen is true from
   Bank and false (not set) from BK. Freeze's answer and ListAccounts say true on both sides.
4. "same-account". Method: Transfer. Trigger: from_account == to_account (an existing account, a
   valid amount). Bank refuses it with INVALID_ARGUMENT "cannot transfer to the same account"
   (before looking the account up); BK answers OK with a Movement that books nothing:
   movement_id "", from_account and to_account the account, amount "0", booked_at its clock
   (even for a frozen account or an amount beyond the balance). Neither book changes, so the books
   still agree: a write one side refuses and the other accepts as a no-op. Fixed, BK refuses it
   as Bank does.
"""

from tests.services.custody._book import BUGS, SIDES, Book, Refused, Violation
from tests.services.custody.client import Answer, Client
from tests.services.custody.messages import DESCRIPTOR_SET, REGISTRY, new
from tests.services.custody.server import Served, serve
from tests.services.custody.workload import Call, Result, book_of, run_workload

__all__ = [
    "BUGS",
    "DESCRIPTOR_SET",
    "REGISTRY",
    "SIDES",
    "Answer",
    "Book",
    "Call",
    "Client",
    "Refused",
    "Result",
    "Served",
    "Violation",
    "book_of",
    "new",
    "run_workload",
    "serve",
]
