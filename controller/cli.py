"""Command line: ``ari-realtime run | check | calls | model-server | demo``.

Settings come from the environment (see README), optionally from a file
given with ``--env-file`` (``NAME=value`` lines, as docker-compose uses),
before or after the command. A bad setting ends the program with one line
naming it, never a traceback; a name that looks like a setting but is not one
(``OUTBOUND_ALOW``) is a warning line naming the closest real one. ``run``
refuses at start what ``check`` knows is fatal: a bad agents file, a
``MEDIA_ADDRESS`` that is not an address of this host.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from controller import callcmd, eventloop
from controller.agents import AgentsFile, load_agents_file
from controller.config import Settings, load_settings, secret_values, setting_warnings
from controller.errors import AriAuthError, ConfigError, StoreError
from controller.records import OUTCOMES

if TYPE_CHECKING:
    from controller.records import CallRecord

log = logging.getLogger("controller")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to print help)."""
    parser = argparse.ArgumentParser(
        prog="ari-realtime",
        description="Put a speech-to-speech AI agent on an Asterisk PBX through ARI.",
    )
    env_help = "read settings from this file of NAME=value lines as well"
    parser.add_argument("--env-file", help=env_help)
    # The same option after the command (``ari-realtime check --env-file F``),
    # as the README promises; SUPPRESS keeps the value given before it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--env-file", default=argparse.SUPPRESS, help=env_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run", parents=[after], help="register the Stasis app and serve calls until stopped"
    )
    run.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="ARI_MODE=outbound: run N worker processes sharing ARI_LISTEN, restarted when "
        "they die (auto: one per core; default 1, this process alone)",
    )
    sub.add_parser(
        "check", parents=[after], help="preflight: ARI, credentials, modules, media address, model"
    )
    sub.add_parser(
        "model-server",
        help="run the local Realtime test/demo peer (not a model)",
        add_help=False,
    )
    sub.add_parser(
        "demo",
        parents=[after],
        help="sandboxed Asterisk + local model + a real SIP call, then stop",
    )
    callcmd.add_parser(sub, parents=[after])
    calls = sub.add_parser(
        "calls",
        parents=[after],
        help="list call records, newest first; 'calls show ID' prints one in full",
        description="List call records from the store DATABASE_URL names, newest first.",
    )
    calls.add_argument(
        "--limit", type=_limit, default=20, metavar="N", help="at most N calls (default 20)"
    )
    calls.add_argument("--direction", choices=("inbound", "outbound"))
    calls.add_argument("--outcome", choices=OUTCOMES)
    calls_sub = calls.add_subparsers(dest="calls_command", metavar="show")
    show = calls_sub.add_parser(
        "show", help="show ID: one call with transcript, turns, tool calls and cost"
    )
    show.add_argument("call_id", metavar="ID")
    return parser


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 1000")
    return value


def _workers(text: str) -> int:
    from controller.pool.supervisor import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.env_file)


def _secrets(settings: Settings, agents: AgentsFile | None = None) -> list[str]:
    # Tools' headers (HTTP and MCP) hold credentials; their services may echo them back.
    return secret_values(settings, agents.secrets() if agents else [])


def _warn_settings(args: argparse.Namespace) -> list[str]:
    """One warning line per name that looks like a setting but is not one.

    ``run`` prints them to stderr; ``check`` reports them as ``warn`` lines.
    """
    lines = setting_warnings(env_file=args.env_file)
    if args.command != "check":
        for line in lines:
            print(f"ari-realtime: warning: {line}", file=sys.stderr)
    return lines


async def _serve(settings: Settings, agents: AgentsFile | None) -> None:
    from controller.serve import AnyController, Operations, serve

    def started(controller: AnyController, ops: Operations) -> None:
        loop = asyncio.get_running_loop()
        # First signal: drain (no new calls, live ones finish); second: stop now.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, controller.request_drain, settings.drain_seconds)

    await serve(settings, agents, started=started, started_pool=started)


def cmd_run(settings: Settings, workers: int = 1, argv: list[str] | None = None) -> int:
    """``ari-realtime run [--workers N]``."""
    from controller.check import media_address_bindable
    from controller.logs import setup_logging

    if workers > 1:
        return cmd_supervise(settings, workers, argv or [])

    try:
        agents = (
            load_agents_file(settings.agents_file, settings=settings)
            if settings.agents_file
            else None
        )
    except ConfigError as exc:
        print(f"ari-realtime: bad setting: {exc}", file=sys.stderr)
        return 2
    if not media_address_bindable(settings.media_address):
        # Every call would fail at its first packet: refuse now, as check does.
        print(
            f"ari-realtime: bad setting: MEDIA_ADDRESS: {settings.media_address} is not an "
            "address of this host (cannot bind UDP on it); set an address of this machine "
            "that Asterisk can reach",
            file=sys.stderr,
        )
        return 2
    setup_logging(settings.log_level, _secrets(settings, agents))
    try:
        eventloop.run(_serve(settings, agents), settings.event_loop)
    except ConfigError as exc:  # found while opening: store, prices, HTTP_LISTEN
        print(f"ari-realtime: bad setting: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:  # a bad or unreachable DATABASE_URL: one line, no call taken
        print(f"ari-realtime: {exc}", file=sys.stderr)
        return 1
    except AriAuthError:
        print(
            f"ari-realtime: Asterisk rejected ARI user {settings.ari_user!r}; "
            "check ARI_USER / ARI_PASSWORD against ari.conf",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_supervise(settings: Settings, workers: int, argv: list[str]) -> int:
    """``ari-realtime run --workers N`` (N > 1): the supervisor of N worker processes."""
    from controller.logs import setup_logging
    from controller.pool.supervisor import supervise

    if settings.ari_mode != "outbound":
        print(
            "ari-realtime: --workers needs ARI_MODE=outbound: in inbound mode a second "
            "controller takes the Stasis app over from the first (ApplicationReplaced)",
            file=sys.stderr,
        )
        return 2
    setup_logging(settings.log_level, _secrets(settings))
    try:
        return eventloop.run(supervise(settings, workers, argv), settings.event_loop)
    except ConfigError as exc:
        print(f"ari-realtime: bad setting: {exc}", file=sys.stderr)
        return 2


def cmd_check(settings: Settings, warnings: list[str] | None = None) -> int:
    """``ari-realtime check``: print one line per check; exit 1 on any FAIL."""
    from controller.check import run_checks

    results = asyncio.run(run_checks(settings, warnings=warnings or ()))
    for result in results:
        print(result.line())
    failed = [r for r in results if r.status == "FAIL"]
    print(f"check: {len(failed)} problem(s)" if failed else "check: all good")
    return 1 if failed else 0


# --- ari-realtime calls -------------------------------------------------------------


async def _read_calls(settings: Settings, args: argparse.Namespace) -> list[CallRecord] | None:
    from controller.store import open_store

    store = await open_store(settings.database_url.get_secret_value(), create=False)
    try:
        if args.calls_command == "show":
            record = await store.get(args.call_id)
            return None if record is None else [record]
        records: list[CallRecord] = await store.list(
            limit=args.limit, direction=args.direction, outcome=args.outcome
        )
        return records
    finally:
        await store.close()


def cmd_calls(settings: Settings, args: argparse.Namespace) -> int:
    """``ari-realtime calls [--limit N] [--direction D] [--outcome O]`` and ``calls show ID``."""
    from controller.pricing import load_prices
    from controller.recordview import list_lines, show_lines

    try:
        prices = load_prices(settings.prices_file)
        records = asyncio.run(_read_calls(settings, args))
    except ConfigError as exc:
        print(f"ari-realtime: bad setting: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"ari-realtime: {exc}", file=sys.stderr)
        return 1
    if records is None:
        print(f"ari-realtime: no call with id {args.call_id!r}", file=sys.stderr)
        return 1
    if args.calls_command == "show":
        lines = show_lines(records[0], prices)
    else:
        lines = list_lines(records, prices)
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ari-realtime`` command."""
    argv = sys.argv[1:] if argv is None else argv
    # model-server has its own parser; hand it the rest of the line untouched.
    if "model-server" in argv:
        from controller.devtools.modelserver import main as model_server_main

        code: int = model_server_main(argv[argv.index("model-server") + 1 :])
        return code
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from controller.devtools.demo import main as demo_main

            demo_code: int = demo_main(args.env_file)
            return demo_code
        # Warnings first: a misspelt name may be why a setting is missing.
        warnings = _warn_settings(args) if args.command in ("run", "check") else []
        settings = _settings(args)
    except ConfigError as exc:
        print(f"ari-realtime: bad setting: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        env_file = ["--env-file", args.env_file] if args.env_file else []
        return cmd_run(settings, args.workers, env_file)
    if args.command == "check":
        return cmd_check(settings, warnings)
    if args.command == "calls":
        return cmd_calls(settings, args)
    if args.command == "call":
        return cmd_call(settings, args)
    raise AssertionError(args.command)


def cmd_call(settings: Settings, args: argparse.Namespace) -> int:
    """``ari-realtime call``: place an outbound call through the running controller."""
    try:
        body = callcmd.build_request(args)
        callcmd.base_url(settings)
    except ValueError as exc:
        print(f"ari-realtime: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(callcmd.place_call(settings, body, wait=args.wait))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
