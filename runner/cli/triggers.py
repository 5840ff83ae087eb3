"""``shardmap trigger serve``: runs started by S3 upload notifications (:mod:`runner.triggers`)."""

from __future__ import annotations

import logging

import click

from runner.cli.common import (
    guard,
    main,
)


@main.group("trigger")
def trigger_group() -> None:
    """Start runs when data lands in S3, exactly once per object version (docs/triggers.md)."""


@trigger_group.command("serve")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--once", is_flag=True, help="Take one round of events, finish its runs, exit.")
@guard
def trigger_serve_command(config: str, once: bool) -> None:
    """Map S3 "Object Created" events to the pipelines of CONFIG until SIGTERM."""
    from runner.triggers.service import serve

    if logging.getLogger().level > logging.INFO:  # a service says what it starts and refuses
        logging.getLogger("shardmap.triggers").setLevel(logging.INFO)
    # The config's own state_dir wins; else --state-dir, else $SHARDMAP_STATE_DIR.
    serve(config, once=once, state_dir=click.get_current_context().find_root().params["state_dir"])
