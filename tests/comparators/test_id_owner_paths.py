"""`owner_key` given as method paths (`package.Service/Method:response.field`), on custody's Transfer: a
movement between two accounts is owned by both, as it is when the fields are named on the type.

Before, each later method path replaced the one before (only `to_account` was kept), so a call naming the
movement was ordered, and a missed write marked, on one account; a path on a method minting nothing of
the kind was accepted and never used.
"""

from __future__ import annotations

import pytest

from comparators.ids import OWNERS, IdError, IdFields, IdKind
from tests.services.custody import REGISTRY

TRANSFER = "custody.v1.Custody/Transfer"
MINTED_ON_TYPE, MINTED_BY_PATH = "custody.v1.Movement.movement_id", f"{TRANSFER}:response.movement_id"


def _owners(owner_key: tuple[str, ...], minted: str) -> list[str]:
    fields = IdFields([IdKind("movement", minted=(minted,), owner_key=owner_key)], REGISTRY)
    answer = REGISTRY.message_class("custody.v1.Movement")(
        movement_id="M1", from_account="A1", to_account="A2", amount="5"
    )
    (found,) = fields.find("/" + TRANSFER, "response", [answer], None)
    return found.owner.split(OWNERS)


@pytest.mark.parametrize("minted", [MINTED_ON_TYPE, MINTED_BY_PATH])
def test_several_method_path_owners_give_every_key_as_type_fields_do(minted: str) -> None:
    by_type = _owners(("custody.v1.Movement.from_account", "custody.v1.Movement.to_account"), minted)
    by_path = _owners((f"{TRANSFER}:response.from_account", f"{TRANSFER}:response.to_account"), minted)
    assert by_type == by_path == ["A1", "A2"]


def test_an_owner_path_on_a_method_that_mints_no_id_of_the_kind_is_refused() -> None:
    with pytest.raises(IdError) as caught:
        IdFields(
            [
                IdKind(
                    "movement",
                    minted=(MINTED_BY_PATH,),
                    owner_key=("custody.v1.Custody/Deposit:response.to_account",),
                )
            ],
            REGISTRY,
        )
    assert str(caught.value) == (
        "ids.movement.owner_key[0]: custody.v1.Custody/Deposit mints no movement id"
        " (an owner key is read from a call that mints one)"
    )
