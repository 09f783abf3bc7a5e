"""How a store url is shown (log lines, errors, reports, the ready line, the commands): rebuilt from what
libpq reads of it, with no password or other secret parameter, however the url spells them; and a url
libpq cannot read refused in words that quote none of it."""

from __future__ import annotations

import asyncio
import json

import pytest

from sample_ledger.server import RunningLedger
from shim.store import Store, StoreError
from tests.helpers import postgres_schema_url, shim_command
from tests.processes import shim_process

SECRETS = ("s3cr?tPW", "ab#cdPW", "keyPASSPHRASE", "pass/WORD", "hushPW")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # libpq takes "?" and "#" in a password as they are; the password was shown from the "?" or "#" on
        ("postgresql://shim:s3cr?tPW@db:5432/shim", "postgresql://shim:***@db:5432/shim"),
        ("postgresql://shim:ab#cdPW@db:5432/shim", "postgresql://shim:***@db:5432/shim"),
        ("postgresql://shim:pass%2FWORD@db/shim", "postgresql://shim:***@db/shim"),
        # the passphrase of the client key was shown as it was
        ("postgresql://shim@db/shim?sslpassword=keyPASSPHRASE", "postgresql://shim@db/shim?sslpassword=***"),
        (
            "postgres://shim@db/shim?password=hushPW&sslmode=require",
            "postgres://shim:***@db/shim?sslmode=require",
        ),
        (
            "postgresql:///shim?host=/run/pg&password=hushPW",
            "postgresql:///shim?host=%2Frun%2Fpg&password=***",
        ),
        ("postgresql://shim@a:5432,b:5433/shim", "postgresql://shim@a:5432,b:5433/shim"),
        ("postgresql://[::1]:5432/shim", "postgresql://[::1]:5432/shim"),
        (
            "postgresql://shim:s3cr?tPW@db/shim?options=-c%20search_path%3Dx",
            "postgresql://shim:***@db/shim?options=-c%20search_path%3Dx",
        ),
    ],
)
def test_a_postgres_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert Store.open(url).url == shown


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://shim:sec%zzretPW@db:5432/shim", "a % not followed by two hexadecimal digits"),
        ("postgresql://shim:s ecretPW@db:5432/shim", "it holds a space"),
        ("postgresql://shim:secretPW@[db:5432/shim", "a [ opens an IPv6 host address that no ] closes"),
        ("postgresql://shim:secretPW@db/shim?sslmod=secretPW", "names no parameter libpq knows"),
        # libpq ends the password at a "/" or a second "@": the rest would be read as the port, host or
        # database name, and shown as one of them (or quoted by libpq: 'invalid integer value "ecretPW"')
        ("postgresql://shim:s/ecretPW@db/shim", "a / or @ in the user name or password ends it there"),
        ("postgresql://shim:12/secretPW@db/shim", "a / or @ in the user name or password ends it there"),
        ("postgresql://shim:s@ecretPW@db/shim", "a / or @ in the user name or password ends it there"),
    ],
)
def test_a_postgres_url_libpq_cannot_read_is_refused_without_quoting_it(url: str, why: str) -> None:
    """Before, libpq's own message was added, quoting the url, password and all."""
    with pytest.raises(StoreError) as refused:
        Store.open(url)
    text = str(refused.value)
    assert text.startswith("invalid store url postgresql://... (not shown: it may hold a password): ")
    assert why in text
    assert "ecretPW" not in text
    assert "db" not in text


@pytest.mark.parametrize("url", ["mysql://u:hushPW@db/x", "sqlite://u:hushPW@db/x.db"])
def test_another_url_naming_a_host_is_refused_showing_its_scheme_alone(url: str) -> None:
    with pytest.raises(StoreError, match=r"store url [a-z]+://\.\.\. \(not shown") as refused:
        Store.open(url)
    assert "hushPW" not in str(refused.value)


async def test_a_store_that_cannot_be_reached_is_named_without_its_password() -> None:
    store = Store.open("postgresql://postgres:s3cr?tPW@127.0.0.1:1/test")
    with pytest.raises(StoreError) as caught:
        await asyncio.wait_for(store.start(), timeout=20)
    assert str(caught.value).startswith("cannot open store postgresql://postgres:***@127.0.0.1:1/test: ")
    assert "s3cr" not in str(caught.value)
    await store.close()


@pytest.mark.parametrize("command", ["report", "gate", "ids list", "record list"])
@pytest.mark.parametrize("url", ["mysql://u:hushPW@db/x", "postgresql://u:pass/WORD@db/x"])
async def test_the_commands_name_a_bad_store_without_its_password(command: str, url: str) -> None:
    """`shim report --store URL` said "no store at mysql:/u:hushPW@db/x" before."""
    code, out, err = await shim_command(*command.split(), "--store", url)
    assert code == 2, (out, err)
    assert not any(secret in out + err for secret in SECRETS), err


async def test_the_ready_line_shows_a_postgres_store_without_its_password(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A working url whose password holds a "?" (libpq reads it as part of the password): the ready line
    showed the password from the "?" on."""
    bank, bk = ledgers
    with postgres_schema_url() as url:
        with_password = url.replace("postgresql://postgres@", "postgresql://postgres:s3cr?tPW@", 1)
        assert "s3cr?tPW" in with_password
        args = ["--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address]
        async with shim_process(*args, "--store", with_password, "--dataplane", "python") as shim:
            ready = shim.ready
    assert ready["store"].startswith("postgresql://postgres:***@")
    assert "s3cr" not in json.dumps(ready)
