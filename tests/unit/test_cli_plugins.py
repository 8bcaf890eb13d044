"""`gtm lb ...` and `gtm certs list` come from regional_lb through the `gtm.cli`
entry-point group; gtm.cli itself imports no balancer module (.importlinter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gtm.cli import build_parser


def test_lb_serve_is_registered_by_the_balancer() -> None:
    args = build_parser().parse_args(["lb", "serve", "--config", "lb.toml", "--workers", "2"])
    assert args.handler.__module__ == "regional_lb.cli"
    assert (args.config, args.workers) == (Path("lb.toml"), 2)


def test_certs_group_keeps_both_sides() -> None:
    parser = build_parser()
    listing = parser.parse_args(["certs", "list", "--dir", "certs"])
    assert listing.handler.__module__ == "regional_lb.cli"
    upload = parser.parse_args(["certs", "keygen", "key.file"])
    assert upload.handler.__module__ == "gtm.control.certs_cli"


def test_certs_list_of_an_empty_directory_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gtm.cli", "certs", "list", "--dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_lb_serve_takes_a_file_or_the_control_plane_never_both(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gtm.cli", "lb", "serve", *args],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    store = f"sqlite:///{tmp_path / 'gtm.db'}"
    neither = serve()
    assert neither.returncode == 2 and "--config FILE or --control" in neither.stderr
    both = serve("--config", "lb.toml", "--control", store, "--region", "eu")
    assert both.returncode == 2 and "one of the two" in both.stderr
    no_region = serve("--control", store, "--state-dir", str(tmp_path))
    assert no_region.returncode == 2 and "--control needs --region" in no_region.stderr
    no_state = serve("--control", store, "--region", "eu")
    assert no_state.returncode == 2 and "--state-dir" in no_state.stderr
    token_for_a_file = serve("--config", "lb.toml", "--admin-token-file", "t")
    assert token_for_a_file.returncode == 2 and "--admin-token-file" in token_for_a_file.stderr
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    no_token = serve("--control", store, "--region", "eu", "--state-dir", str(tmp_path),
                     "--admin-token-file", str(empty))
    assert no_token.returncode == 2 and "is empty" in no_token.stderr
    assert "lb.REGION" in serve("--help").stdout
