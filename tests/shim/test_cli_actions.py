"""A command that does several things (`shim mode`, `shim ids`, `shim record`) says, when it is not told
which, what to run instead of argparse's bare "invalid choice" (exit status 2, one line)."""

from __future__ import annotations

import pytest

from shim.cli import main

CASES = [
    (["mode", "--config", "shim.toml"], "shim mode show|set|history", "not 'shim.toml'"),
    (["mode"], "shim mode show|set|history", ""),
    (["ids", "--store", "shim.db"], "shim ids list|forget|import", "not 'shim.db'"),
    (["record"], "shim record list|export", ""),
]


@pytest.mark.parametrize(("argv", "run", "not_"), CASES)
def test_a_command_without_what_to_do_names_its_actions(
    argv: list[str], run: str, not_: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shim mode --config shim.toml` (and `shim mode`) names the actions to choose from and the help."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    command = run.rpartition(" ")[0]
    said = f"; {not_}" if not_ else ""
    assert line == f"shim: error: {command}: name what to do: {run} ... (see {command} --help){said}"
