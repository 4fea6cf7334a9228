"""Every command and sub-command of `openbank-mesh` answers --help."""

from __future__ import annotations

import pytest

from meshcli.main import build_parser


def test_every_command_has_help(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = build_parser()
    commands: list[list[str]] = [[]]
    for action in parser._subparsers._group_actions:  # every command and sub-command
        for name, sub in action.choices.items():
            commands.append([name])
            if sub._subparsers is not None:
                for inner in sub._subparsers._group_actions:
                    commands.extend([name, inner_name] for inner_name in inner.choices)
    assert ["window", "report"] in commands and ["demo"] in commands
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([*command, "--help"])
        assert exited.value.code == 0, command
        assert "usage:" in capsys.readouterr().out, command
