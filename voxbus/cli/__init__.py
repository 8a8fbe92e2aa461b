"""The `voxbus` command. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Callable

from voxbus import __version__
from voxbus.cli import (
    ask_cmd, config_cmd, creds_cmd, demo_cmd, events_cmd, http_cmd, listen_cmd, manager_cmd, metrics_cmd, models_cmd,
    publish_cmd, replay_cmd, say_cmd, server_cmd, status_cmd, stt_cmd, transcribe_cmd, up_cmd, wyoming_cmd,
)
from voxbus.config import Config, load_config
from voxbus.errors import ConfigError, VoxbusError

COMMANDS = (demo_cmd, transcribe_cmd, up_cmd, server_cmd, config_cmd, manager_cmd, stt_cmd, publish_cmd, listen_cmd,
            replay_cmd, say_cmd, ask_cmd, models_cmd, creds_cmd, http_cmd, wyoming_cmd, status_cmd, events_cmd,
            metrics_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxbus",
        description="voxbus: a local voice-AI pipeline on NATS JetStream.",
    )
    parser.add_argument("--version", action="version", version=f"voxbus {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="voxbus.yaml to layer over the defaults (or $VOXBUS_CONFIG)")
    common.add_argument("--nats", metavar="URL", help="NATS server URL (or $VOXBUS_NATS_URL); default: the embedded server")
    common.add_argument("--creds", metavar="FILE", help="NATS credentials: an nkey seed from `voxbus creds new`, or a .creds file (or $VOXBUS_NATS_CREDS)")
    common.add_argument("--tls-ca", metavar="FILE", help="CA certificate to verify a TLS server with (or $VOXBUS_NATS_TLS_CA)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub, common)
    return parser


def load_for(args: argparse.Namespace, **overrides: Any) -> Config:
    """Effective config for a command: file + environment, then --nats and command flags."""
    over: dict[str, Any] = dict(overrides)
    if getattr(args, "nats", None):
        over.setdefault("nats", {})["url"] = args.nats
    if getattr(args, "creds", None):
        over.setdefault("nats", {})["creds"] = args.creds
    if getattr(args, "tls_ca", None):
        over.setdefault("nats", {})["tls_ca"] = args.tls_ca
    return load_config(getattr(args, "config", None), overrides=over)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # nats-py logs every reconnect attempt; keep that for -v.
    logging.getLogger("nats").setLevel(logging.INFO if verbose else logging.WARNING)
    # stamina's own hook logs a bare "stamina.retry_scheduled" (its details go to structured
    # fields a plain formatter drops): say what is retried, why, and when.
    import stamina.instrumentation

    stamina.instrumentation.set_on_retry_hooks([_log_retry])


def _log_retry(details) -> None:
    logging.getLogger("voxbus.retry").warning(
        "retrying %s in %.1f s (attempt %d, %.1f s so far): %s", details.name, details.wait_for,
        details.retry_num, details.waited_so_far, details.caused_by)


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, for long-running commands that drain before exiting."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_async(coro_fn: Callable[[], Any]) -> int:
    try:
        return asyncio.run(coro_fn()) or 0
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        return args.handler(args) or 0
    except ConfigError as exc:
        print(f"voxbus: configuration error: {exc}", file=sys.stderr)
        return 2
    except VoxbusError as exc:
        print(f"voxbus: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into `head` and friends: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
