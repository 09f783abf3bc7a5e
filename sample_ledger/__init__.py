"""Two implementations of Bank's gRPC interface (`bank.v1.Ledger`) for the demo, tests and benchmarks.

* **Bank** (`sample_ledger.bank`) is the legacy service: dictionaries of
  accounts, running cash figures and a list of trade records.
* **BK** (`sample_ledger.bk`) is its rewrite: a double-entry journal whose
  balanced transactions post to per-account cash (settled / pending),
  securities-by-symbol and fees accounts; balances, positions and ledger
  entries are derived from the postings.

BK also serves its own interface, ``bk.v1.Journal`` (`sample_ledger.bk_native`,
over the same book), and `sample_ledger.adapter` holds the shim's adapters that
serve Bank's interface from it, with a planted bug of their own (ledger entry
amounts between -1 and 0 lose their sign).

Run one with ``python -m sample_ledger bank|bk|bk-native --listen HOST:PORT``, or in
process with `sample_ledger.server.serve`; drive traffic with
`sample_ledger.workload.run_workload`.

Both sides answer the same, except for the benign differences and the planted
bugs listed below. Rules they share:

* Decimals are plain strings ("-12.5"; no exponent). Quantities are positive
  with at most 4 decimals, prices positive with at most 6 (both at most 1e9),
  money amounts (deposits) non-zero with at most 2 decimals (at most 1e12);
  anything else is INVALID_ARGUMENT with one google.rpc.BadRequest field
  violation per bad field.
* Money (fee, notional, cash, amounts) is whole cents: notional is quantity x
  price rounded half up to cents, the fee quantity x 0.005 rounded to cents.
* The average price is the running weighted average cost of acquisitions
  (sells leave it, an empty position resets it), reported rounded half up to 4
  decimals; cost_basis is quantity x that reported average, rounded half up to
  cents.
* Cancelling a BUY affects the position as a sell of its quantity would, and is
  refused with FAILED_PRECONDITION when less than that is still held;
  cancelling a SELL affects it as a buy at the sell's price.
* Request fields are checked first, then the account, then everything else.

Benign differences between Bank and BK
--------------------------------------
A faithful rewrite has these; a comparison must tolerate them.

1. Trade id format: Bank mints "T" + an 8-digit counter ("T00000001",
   "T00000002", ...); BK mints "trd_" + 12 random lowercase hex digits
   ("trd_3f9a0c12be47").
2. Decimal formatting: Bank writes money (fee, notional, cash, unsettled_cash,
   net_cash, total_notional, total_fees, entry amounts, cost_basis) with
   exactly 2 decimals ("1005.00", "0.00"), prices with at least 2 decimals
   ("100.5" -> "100.50", "10.125" stays), quantities as integers when whole
   ("100", "-100") and otherwise with as few decimals as needed ("2.5"), and
   average_price with exactly 4 decimals ("12.3456", "0.0000"). BK writes every
   decimal normalised, without trailing zeros or exponent ("100.5", "1005",
   "0", "12.3456"). The values are always equal as decimals.
3. Order of unordered lists: Portfolio.positions is in the order the symbols
   were first acquired in Bank and sorted by symbol descending in BK;
   SettlementReport.settled_trade_ids is in booking order in Bank and sorted by
   BK's own (random) trade id in BK.
4. Server timestamps (Account.opened_at, Trade.booked_at, Portfolio.as_of,
   Balance.as_of, SettlementReport.settled_at, LedgerEntry.posted_at) come from
   each side's own clock (Bank nanoseconds, BK microseconds), so they differ by
   a few milliseconds.
5. BK sets Trade.venue = "XNYS" on every trade; Bank never sets it ("").
6. Page tokens (ListAccounts, ListTrades next_page_token): Bank's is the
   decimal offset of the next item ("50"); BK's is opaque, the urlsafe base64
   of the last id returned ("QTAwMDE="). Each side accepts only its own tokens
   and answers INVALID_ARGUMENT to the other's.
7. Error messages: BK words every error message, and every BadRequest field
   violation description, differently from Bank; status codes and the fields
   named in BadRequest details are the same (unless a planted bug says
   otherwise).

Planted bugs in BK
------------------
Real differences that a shadow comparison must catch.

1. Fee rounding. Method: PostTrade (and every trade booked by BookTrades or
   TradeSession). Trigger: a quantity that is an odd integer congruent to 1
   mod 4 (1, 5, 9, 13, ..., 497), where quantity x 0.005 ends in exactly half a
   cent. Bank rounds the fee HALF_UP, BK HALF_EVEN: quantity "1" -> Bank fee
   "0.01", BK fee "0"; quantity "5" -> Bank "0.03", BK "0.02". The difference
   shows in Trade.fee wherever the trade appears (PostTrade, CancelTrade,
   ListTrades, TradeSession) and propagates to Balance.cash and
   Balance.unsettled_cash, the FEE and CANCELLATION LedgerEntry amounts,
   SettlementReport.net_cash and BookTradesSummary.total_fees. (Quantities 3,
   7, 11, ... and fractional quantities round the same on both sides.)
2. Unknown account. Methods: every method that takes an account_id of an
   existing account - GetAccount, Deposit, PostTrade, CancelTrade, GetPosition,
   GetPortfolio, GetBalance, ListTrades, SettleTrades, StreamLedgerEntries - and
   the orders of BookTrades and TradeSession. Trigger: an account_id that was
   never opened (including ""), in an otherwise valid request. Bank answers
   NOT_FOUND ("account 'X' not found"); BK answers INVALID_ARGUMENT with a
   BadRequest violation on "account_id". In TradeSession the Rejection.code is
   "NOT_FOUND" from Bank and "INVALID_ARGUMENT" from BK; in BookTrades both
   count the order as rejected.
3. Oversell. Methods: PostTrade, BookTrades, TradeSession. Trigger: a SELL of
   more than the quantity held (e.g. selling "10" of a symbol held 4, or any
   SELL of a symbol never bought). Bank rejects it with FAILED_PRECONDITION
   ("insufficient position: ..."), books nothing and writes no entry; BK books
   it (status BOOKED, cash credited) and the position goes negative (GetPosition
   quantity "-6" after the example).
"""
