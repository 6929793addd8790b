"""`agent secrets list|set|remove`: the secrets file (see tools/secrets.py), managed without
ever printing a value or taking one on the command line (where `ps` and shell history see it)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys

from rich.console import Console

from agent.config import Config
from base.errors import ConfigError
from frontends.screen import print_json, say, shown
from sandbox._allowlist import parse_entry
from tools.secrets import (
    KEYRING_SERVICE,
    NAME,
    SHORTEST,
    Secrets,
    declaration,
    read_file,
    write_file,
)


def add_secrets_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    secrets = sub.add_parser(
        "secrets",
        help="named secrets that tools fill in for {{secret:NAME}}; the model never sees them",
    )
    commands = secrets.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")
    commands.add_parser(
        "list", parents=[common], help="each secret, its hosts and where its value is (not it)"
    )
    set_ = commands.add_parser(
        "set",
        parents=[common],
        help="declare a secret; its value is read from the terminal (hidden) or standard input",
    )
    set_.add_argument("name", help="letters, digits and _ (the model writes {{secret:NAME}})")
    set_.add_argument(
        "--host",
        action="append",
        required=True,
        dest="hosts",
        metavar="HOST",
        help="a host it may be sent to (api.example.com, *.example.com, an IP), with :port for a "
        "port other than HTTPS's 443; repeat for more",
    )
    where = set_.add_mutually_exclusive_group()
    where.add_argument(
        "--env", metavar="VARIABLE", help="read its value from this variable of the runner"
    )
    where.add_argument(
        "--keyring",
        action="store_true",
        help=f"keep its value in the OS keyring ({KEYRING_SERVICE})",
    )
    remove = commands.add_parser("remove", parents=[common], help="forget a secret")
    remove.add_argument("name")


def secrets_command(args: argparse.Namespace, config: Config, out: Console) -> int:
    path = config.secrets.path()
    command = args.secrets_command
    if command == "list":
        found = list(Secrets.load(path))
        if args.json:
            print_json(
                [
                    {
                        "name": s.name,
                        "hosts": list(s.hosts),
                        "source": s.source,
                        "missing": s.missing,
                    }
                    for s in found
                ]
            )
        elif not found:
            out.print(f"no secrets ({path})")
        for secret in [] if args.json else found:
            state = f"  [yellow]no value: {shown(secret.missing)}[/]" if secret.missing else ""
            out.print(
                f"{secret.name}  {shown(', '.join(secret.hosts))}  ({shown(secret.source)}){state}"
            )
        return 0
    if not NAME.fullmatch(args.name):
        raise ConfigError(f"{args.name!r} is not a secret's name: letters, digits and _")
    declared = read_file(path)
    if command == "remove":
        if declared.pop(args.name, None) is None:
            print(f"error: no secret is named {args.name} ({path})", file=sys.stderr)
            return 1
        write_file(path, declared)
        _forget_in_keyring(args.name)
        say(args.json, out, {"name": args.name, "removed": True}, f"removed {args.name}")
        return 0
    for host in args.hosts:
        try:
            parse_entry(host)
        except ValueError as exc:
            raise ConfigError(f"--host: {exc}") from None
    value = None if args.env else _read_value(args.name)
    try:
        entry = declaration(
            args.hosts, value=None if args.keyring else value, env=args.env, keyring=args.keyring
        )
    except ValueError as exc:
        raise ConfigError(f"secret {args.name}: {exc}") from None
    if args.keyring and value is not None:
        if len(value) < SHORTEST:
            raise ConfigError(f"secret {args.name}: a value must be at least {SHORTEST} characters")
        _keep_in_keyring(args.name, value)
    declared[args.name] = entry
    write_file(path, declared)
    say(
        args.json,
        out,
        {"name": args.name, "hosts": args.hosts, "file": str(path)},
        f"{args.name}: may be sent to {', '.join(args.hosts)} (kept in {path})",
    )
    return 0


def _read_value(name: str) -> str:
    """The value, hidden as it is typed at a terminal, or the first line of standard input."""
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name} (not shown): ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise ConfigError(f"no value was given for {name}")
    return value


def _keep_in_keyring(name: str, value: str) -> None:
    import keyring  # noqa: PLC0415 - only where a secret is kept there
    import keyring.errors  # noqa: PLC0415

    try:
        keyring.set_password(KEYRING_SERVICE, name, value)
    except keyring.errors.KeyringError as exc:
        raise ConfigError(
            f"the OS keyring cannot keep {name} here ({exc}): keep it in the file (no --keyring) "
            "or in a variable (--env)"
        ) from None


def _forget_in_keyring(name: str) -> None:
    import keyring  # noqa: PLC0415
    import keyring.errors  # noqa: PLC0415

    # Not kept there, or no keyring here: nothing to forget.
    with contextlib.suppress(keyring.errors.KeyringError):
        keyring.delete_password(KEYRING_SERVICE, name)
