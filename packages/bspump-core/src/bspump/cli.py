"""The ``bspump`` command: run, check, plugins, new-plugin, --version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from .application import BSPumpApplication
from .config import ConfigError, redact
from .declare import unused_sections
from .errors import BSPumpError
from .plugins import Plugins
from .template import command_new_plugin
from .version import __version__

log = logging.getLogger("bspump.cli")

CONFIG_NAME = "pipelines.conf"
SCRIPT_NAMES = ("main.py", "app.py", "pipeline.py", "__main__.py")


class UsageError(Exception):
    """A command-line problem that gets a one-line message and exit code 2."""


def resolve_target(path_text: str) -> tuple[str, Path]:
    """``("config", file)`` or ``("python", file)`` for a pipelines.conf, a Python file or a folder of one."""
    path = Path(path_text)
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            return "config", path / CONFIG_NAME
        for name in SCRIPT_NAMES:
            if (path / name).is_file():
                return "python", path / name
        raise UsageError(f"{path}: the folder holds neither {CONFIG_NAME} nor one of {', '.join(SCRIPT_NAMES)}")
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    return ("python" if path.suffix == ".py" else "config"), path


def load_application(path_text: str, purpose: str) -> BSPumpApplication:
    """Build the application a path describes, without running it."""
    kind, path = resolve_target(path_text)
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)  # `type = module:Class` and the script's own imports resolve from there
    if kind == "config":
        app = BSPumpApplication(path)
        app.build_declared()
        return app
    # Run the script under a name other than "__main__", so that `if __name__ == "__main__": app.run()`
    # does not fire; then pick up the application it built.
    namespace = runpy.run_path(str(path), run_name=f"__bspump_{purpose}__")
    apps = [value for value in namespace.values() if isinstance(value, BSPumpApplication)]
    if not apps:
        raise UsageError(
            f"{path}: defines no BSPumpApplication at module level (e.g. app = bspump.BSPumpApplication())"
        )
    app = apps[0]
    app.build_declared()
    return app


# -- run -------------------------------------------------------------------------------------------------
def command_run(args: argparse.Namespace) -> int:
    app = load_application(args.path, "run")
    started = time.monotonic()
    exit_code = asyncio.run(_run_with_progress(app, show=args.progress and sys.stderr.isatty()))
    print_summary(app, time.monotonic() - started, sys.stderr)
    return exit_code


async def _run_with_progress(app: BSPumpApplication, show: bool) -> int:
    reporter = asyncio.create_task(_progress(app, sys.stderr)) if show else None
    try:
        return await app.run_async()
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            sys.stderr.write("\r\x1b[K")


async def _progress(app: BSPumpApplication, out: TextIO) -> None:
    while True:
        await asyncio.sleep(1.0)
        parts = []
        for pipeline in app.pump_service.pipelines.values():
            m = pipeline.metrics()
            parts.append(f"{pipeline.id}: in {m['in']:,} out {m['out']:,} dropped {m['dropped']:,} "
                         f"({m['eps']:,.0f} ev/s)")
        out.write("\r\x1b[K" + " | ".join(parts))
        out.flush()


def print_summary(app: BSPumpApplication, elapsed: float, out: TextIO) -> None:
    """Events in/out/dropped/errors per pipeline, elapsed time and rate."""
    totals = {"in": 0, "out": 0, "dropped": 0, "errors": 0}
    for pipeline in app.pump_service.pipelines.values():
        m = pipeline.metrics()
        for key in totals:
            totals[key] += m[key]
        out.write(f"pipeline {pipeline.id} ({m['state']}): in {m['in']:,}, out {m['out']:,}, "
                  f"dropped {m['dropped']:,}, errors {m['errors']:,}\n")
    rate = totals["in"] / elapsed if elapsed > 0 else 0.0
    out.write(f"summary: events in {totals['in']:,}, out {totals['out']:,}, dropped {totals['dropped']:,}, "
              f"errors {totals['errors']:,}; elapsed {elapsed:.2f}s; {rate:,.0f} events/s\n")


# -- check -----------------------------------------------------------------------------------------------
def command_check(args: argparse.Namespace) -> int:
    app = load_application(args.path, "check")
    service = app.pump_service
    print(f"configuration: {app.config.path or '(none)'}")
    for connection in service.connections.values():
        print(f"connection {connection.id}: {type(connection).__module__}.{type(connection).__name__} "
              f"{orjson.dumps(redact(dict(connection.Config)), default=str).decode()}")
    for lookup in service.lookups.values():
        print(f"lookup {lookup.id}: {type(lookup).__name__}")
    for pipeline in service.pipelines.values():
        chain = " -> ".join(f"{c.id} ({type(c).__name__})" for c in pipeline.components)
        print(f"pipeline {pipeline.id}: {chain}")
    for info in app.plugins.failed():
        print(f"warning: plugin {info.name} failed to load: {info.error}")
    for problem in unused_sections(app):
        print(f"warning: {problem}")
    print("ok: configuration is valid (nothing was connected)")
    return 0


# -- plugins ---------------------------------------------------------------------------------------------
def command_plugins(args: argparse.Namespace) -> int:
    """List every plugin; exit 1 when one failed to load, so that CI and install scripts notice."""
    plugins = Plugins()
    rows = [info.__dict__ for info in plugins.infos]
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        for info in plugins.infos:
            version = f" {info.version}" if info.version else f" {__version__}" if info.name == "core" else ""
            dist = f" ({info.distribution})" if info.distribution else ""
            print(f"{info.name}{version}{dist}: {info.status}")
            for type_name in info.types:
                print(f"    {type_name}")
            if info.error:
                print(f"    error: {info.error}")
    failed = [info.name for info in plugins.failed()]
    if failed:
        print(f"error: {len(failed)} plugin(s) failed to load: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bspump", description="Run and inspect bspump pipelines.")
    parser.add_argument("--version", action="version", version=f"bspump {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("BSPUMP_LOG_LEVEL", "WARNING"),
                        help="logging level (default WARNING; env BSPUMP_LOG_LEVEL)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a pipelines.conf, a Python file, or a folder holding one")
    run.add_argument("path")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line on a terminal")
    run.set_defaults(handler=command_run)
    check = commands.add_parser("check", help="validate a configuration without connecting")
    check.add_argument("path")
    check.set_defaults(handler=command_check)
    plugins = commands.add_parser("plugins", help="list installed plugins, their types and load errors")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(handler=command_plugins)
    new_plugin = commands.add_parser("new-plugin", help="write a new plugin distribution, bspump-NAME, to start from")
    new_plugin.add_argument("name", help="the plugin's name: lowercase letters, digits and _ (e.g. my_store)")
    new_plugin.add_argument("--directory", default=".", help="where to write bspump-NAME (default: here)")
    new_plugin.set_defaults(handler=command_new_plugin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bspump`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: Any = args.handler(args)
    except (ConfigError, UsageError, BSPumpError) as exc:
        print(f"bspump: error: {exc}", file=sys.stderr)
        return 2
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
