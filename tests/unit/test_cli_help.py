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


def test_up_waits_as_long_as_it_is_told_and_refuses_a_bad_wait(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = build_parser()
    assert parser.parse_args(["up"]).ready_timeout == 120.0
    assert parser.parse_args(["up", "--ready-timeout", "300"]).ready_timeout == 300.0
    for bad in ("soon", "0", "-5", "7200"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["up", "--ready-timeout", bad])
        assert exited.value.code == 2
        assert "--ready-timeout" in capsys.readouterr().err
