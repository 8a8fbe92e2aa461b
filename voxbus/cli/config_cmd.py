"""`voxbus config show`: print the effective configuration (defaults + file + environment)."""

from __future__ import annotations

import argparse
import os
import sys

from voxbus.config import config_to_yaml
from voxbus.config.loader import find_user_config


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="show the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", parents=[common], help="print the effective config as YAML")
    show.set_defaults(handler=show_config)
    path = csub.add_parser("path", parents=[common], help="print which user config file is in effect")
    path.set_defaults(handler=show_path)


def show_config(args: argparse.Namespace) -> int:
    from voxbus.cli import load_for

    config = load_for(args)
    user = find_user_config(args.config, os.environ)
    sys.stdout.write(f"# effective voxbus configuration (defaults{' + ' + str(user) if user else ''})\n")
    sys.stdout.write(config_to_yaml(config))
    return 0


def show_path(args: argparse.Namespace) -> int:
    user = find_user_config(args.config, os.environ)
    print(user if user else "(none: built-in defaults only)")
    return 0
