"""`gtm terraform install`: put the provider where `terraform init` finds it.

The executable is a small launcher that runs this installation's Python with the
provider module, so the provider is always the code of the `gtm` that installed it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from gtm import __version__

NAMESPACE = "gtm"
TYPE = "gtm"
SOURCE = f"registry.terraform.io/{NAMESPACE}/{TYPE}"
VERSION = __version__

PLATFORM = "linux_amd64"
DEFAULT_DIR = Path.home() / ".terraform.d" / "plugins"


def executable_path(directory: Path) -> Path:
    return (directory / "registry.terraform.io" / NAMESPACE / TYPE / VERSION / PLATFORM
            / f"terraform-provider-{TYPE}_v{VERSION}")


def launcher() -> str:
    return ("#!/bin/sh\n"
            "# terraform-provider-gtm: written by `gtm terraform install`\n"
            f"exec {shlex.quote(sys.executable)} -m gtm.terraform.provider \"$@\"\n")


def install(directory: Path) -> Path:
    path = executable_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(launcher(), encoding="utf-8")
    os.chmod(temporary, 0o755)
    temporary.replace(path)
    return path


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("terraform", help="the Terraform provider")
    sub = parser.add_subparsers(dest="terraform_command", required=True)
    command = sub.add_parser("install", help="put the provider where `terraform init` finds it")
    command.add_argument("--dir", type=Path, default=None,
                         help=f"plugin directory (default: {DEFAULT_DIR}); with another "
                         "directory, run `terraform init -plugin-dir DIR`")
    command.set_defaults(handler=cmd_install)


def cmd_install(args: argparse.Namespace) -> int:
    directory = args.dir if args.dir is not None else DEFAULT_DIR
    path = install(directory.expanduser().absolute())
    print(f"installed {path}")
    print()
    print("terraform {\n  required_providers {\n"
          f'    gtm = {{\n      source  = "{SOURCE.removeprefix("registry.terraform.io/")}"\n'
          f'      version = "{VERSION}"\n    }}\n  }}\n}}')
    print()
    if args.dir is None:
        print("then: terraform init")
    else:
        print(f"then: terraform init -plugin-dir {shlex.quote(str(directory))}")
    return 0
