"""Run one sample ledger until SIGINT or SIGTERM: ``python -m sample_ledger KIND --listen HOST:PORT``.

KIND is ``bank`` (Bank, bank.v1.Ledger), ``bk`` (BK, bank.v1.Ledger) or ``bk-native`` (BK, its native
bk.v1.Journal interface only). ``bk --fixed`` is BK with its planted bugs 1-3 turned off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from sample_ledger.server import KINDS, serve

log = logging.getLogger("sample_ledger")


async def _run(kind: str, listen: str, delay: float, fixed: bool) -> None:
    running = await serve(kind, listen, delay, fixed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("%s ledger listening on %s", kind, running.address)
    try:
        await stop.wait()
    finally:
        await running.stop(grace=1.0)
    log.info("%s ledger stopped", kind)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sample_ledger", description=__doc__)
    parser.add_argument(
        "kind",
        choices=KINDS,
        help=(
            "which implementation to run: bank or bk serve bank.v1.Ledger; "
            "bk-native serves BK's native interface (bk.v1.Journal) only"
        ),
    )
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="default: a free port")
    parser.add_argument(
        "--delay", type=float, default=0.0, metavar="SECONDS", help="wait this long before every call"
    )
    parser.add_argument(
        "--fixed",
        action="store_true",
        help="bk only: turn its planted bugs 1-3 off (fee rounding, unknown account, oversell)",
    )
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay cannot be negative")
    if args.fixed and args.kind != "bk":
        parser.error("--fixed applies to bk only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_run(args.kind, args.listen, args.delay, args.fixed))


if __name__ == "__main__":
    main()
