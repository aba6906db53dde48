"""The ``bspump`` command: run, check, plugins, new-plugin, --version.

What it prints is meant for people: one line per problem naming ``file:line [section] key``, and no Python
traceback unless ``--log-level DEBUG`` asks for one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from .application import BSPumpApplication
from .config import ConfigError, redact, redact_value
from .declare import unused_sections
from .errors import BSPumpError, StartupError, describe_error
from .plugins import Plugins
from .template import command_new_plugin
from .version import __version__

log = logging.getLogger("bspump.cli")

CONFIG_NAME = "pipelines.conf"
SCRIPT_NAMES = ("main.py", "app.py", "pipeline.py", "__main__.py")
#: After a forced stop, the seconds the process gets to exit normally before it ends at once (a thread stuck
#: in a blocking call would otherwise keep it alive).
FORCED_EXIT_GRACE = 5.0

EXIT_CODES = """\
exit codes:
  0       success: check found nothing wrong; run ended (every pipeline finished, or a graceful stop)
  1       run failed: a pipeline stopped on an error (error_policy = stop), a connection gave up,
          a lookup did not load, a pipeline did not start, the Python file raised, or an unexpected
          error; plugins: a plugin failed to load
  2       bad command line or configuration, including a failed preflight check ([web] listen
          in use, a missing file, ...): nothing was started
  128+N   run was forced to stop by a second signal N: 130 for SIGINT, 143 for SIGTERM; the summary
          still counts what was acknowledged, events in flight were not (they are read again)
"""

CHECK_DESCRIPTION = """\
Validate a configuration without connecting: parse and interpolate it, build every connection, lookup and
pipeline it declares (so that every key is checked against the component's declared keys), then run each
one's preflight checks (files exist, [web] listen is a valid, free port). Nothing is connected, no lookup is
loaded, no event is read.

A type written as module:Class is imported, so its import-time code runs (keep it free of side effects):
check needs the class to know its keys and to run its preflight. A Python file (or a folder holding one) is
executed under a name other than __main__ to get the application it builds; its `if __name__ ==
"__main__":` block does not run.
"""


class UsageError(Exception):
    """A command-line problem that gets a one-line message and exit code 2."""


class ScriptError(Exception):
    """The Python file given to ``bspump run``/``check`` raised while building its application (exit code 1)."""


class OneLineFormatter(logging.Formatter):
    """Formats a record whose ``exc_info`` is set as its message plus the exception's one-line summary,
    unless ``tracebacks`` is true (``--log-level DEBUG``)."""

    def __init__(self, fmt: str, tracebacks: bool) -> None:
        super().__init__(fmt)
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks or not (record.exc_info or record.stack_info):
            return super().format(record)
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        short = logging.makeLogRecord(record.__dict__)
        short.msg = f"{message}: {describe_error(error)}" if error is not None else message
        short.args = None
        short.exc_info = None
        short.exc_text = None
        short.stack_info = None
        return super().format(short)


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
    """Build the application a path describes, without running it.

    A configuration file that declares no pipeline is an error (there would be nothing to run); a Python file
    may build none (it may only serve the web endpoint), which ``run`` and ``check`` report as a warning.
    """
    kind, path = resolve_target(path_text)
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)  # `type = module:Class` and the script's own imports resolve from there
    if kind == "config":
        app = BSPumpApplication(path)
        app.build_declared()
        _require_a_pipeline(app, str(path))
        return app
    # Run the script under a name other than "__main__", so that `if __name__ == "__main__": app.run()`
    # does not fire; then pick up the application it built.
    try:
        namespace = runpy.run_path(str(path), run_name=f"__bspump_{purpose}__")
    except BSPumpError:  # ConfigError included
        raise
    except Exception as exc:
        raise ScriptError(f"{path}: {describe_error(exc)}") from exc
    apps = [value for value in namespace.values() if isinstance(value, BSPumpApplication)]
    if not apps:
        raise UsageError(
            f"{path}: defines no BSPumpApplication at module level (e.g. app = bspump.BSPumpApplication())"
        )
    app = apps[0]
    app.build_declared()
    return app


def _require_a_pipeline(app: BSPumpApplication, path: str) -> None:
    """A configuration file must build a pipeline, else ``run`` would wait for ever doing nothing."""
    if app.pump_service.pipelines:
        return
    unused_sections(app)  # a typo in a key of [pipeline:ID] is the more precise error: it raises first
    untyped = [s for s in app.config.sections() if s.kind == "pipeline" and len(s.ids) == 2 and "type" not in s]
    if untyped:
        listed = ", ".join(f"[{s.name}] (line {s.line})" if s.line else f"[{s.name}]" for s in untyped)
        message = f"declares no pipeline to run: no component section has a type; add type = ... to {listed}"
    else:
        message = ("declares no pipeline to run: add [pipeline:ID:ComponentID] sections with type = ... "
                   "(e.g. type = core.FileSource)")
    raise ConfigError(message, file=app.config.path or path)


# -- run -------------------------------------------------------------------------------------------------
def command_run(args: argparse.Namespace) -> int:
    app = args.app = load_application(args.path, "run")
    return asyncio.run(_run(app, show=args.progress and sys.stderr.isatty(), tracebacks=args.tracebacks))


async def _run(app: BSPumpApplication, show: bool, tracebacks: bool) -> int:
    """Run the application; print the summary once it ended (also after a forced stop or a failed start)."""
    if not tracebacks:
        asyncio.get_running_loop().set_exception_handler(_log_loop_error)
    started = time.monotonic()
    reporter = asyncio.create_task(_progress(app, sys.stderr)) if show else None
    try:
        return await app.run_async()
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            sys.stderr.write("\r\x1b[K")
        if any(pipeline.started_at is not None for pipeline in app.pump_service.pipelines.values()):
            print_summary(app, time.monotonic() - started, sys.stderr)
        if app.forced_stop:
            _report_forced_stop(app, sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        _exit_at_once_on_signal()


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An error nothing awaited (a task that failed while being cancelled, ...), on one line."""
    error = context.get("exception")
    message = str(context.get("message") or "unhandled error in the event loop")
    if isinstance(error, BaseException):
        log.error("%s: %s", message, describe_error(error))
    else:
        log.error("%s", message)


def _report_forced_stop(app: BSPumpApplication, out: TextIO) -> None:
    in_flight = sum(pipeline.in_flight for pipeline in app.pump_service.pipelines.values())
    code = app.exit_code
    cause = f"a second {signal.Signals(code - 128).name}" if code - 128 in _SIGNAL_NUMBERS else "request"
    out.write(f"forced stop by {cause}: {in_flight:,} events in flight were not acknowledged "
              f"(they are read again where the source keeps positions); exit code {code}\n")
    # What is left is cancelling tasks and joining worker threads; a thread stuck in a blocking call (a read
    # that never returns) would hold the interpreter's exit for ever, which a forced stop must not wait for.
    timer = threading.Timer(FORCED_EXIT_GRACE, os._exit, args=(code,))
    timer.daemon = True
    timer.start()


def _exit_at_once_on_signal() -> None:
    """Once the run is over and its summary printed, SIGINT or SIGTERM ends the process at once: all that is
    left is waiting for worker threads, and one stuck in a blocking call would make that wait endless."""
    if threading.current_thread() is not threading.main_thread():
        return

    def exit_now(signum: int, frame: object) -> None:
        sys.stderr.write(f"bspump: {signal.Signals(signum).name}: exiting without waiting for worker threads\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, exit_now)


_SIGNAL_NUMBERS = frozenset(int(s) for s in signal.Signals)


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
    """Events in/out/dropped/errors per pipeline, elapsed time and rate; "out" counts acknowledged events."""
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
    app = args.app = load_application(args.path, "check")
    service = app.pump_service

    def show(line: str) -> None:  # everything check prints passes the application's secret mask
        print(app.secrets.mask(line))

    show(f"configuration: {app.config.path or '(none)'}")
    for connection in service.connections.values():
        show(f"connection {connection.id}: {type(connection).__module__}.{type(connection).__name__} "
             f"{orjson.dumps(redact(dict(connection.Config)), default=str).decode()}")
    for lookup in service.lookups.values():
        show(f"lookup {lookup.id}: {type(lookup).__name__}")
    for pipeline in service.pipelines.values():
        chain = " -> ".join(f"{c.id} ({type(c).__name__})" for c in pipeline.components)
        show(f"pipeline {pipeline.id}: {chain}")
    for info in app.plugins.failed():
        show(f"warning: plugin {info.name} failed to load: {info.error}")
    for warning in app.warnings():
        show(f"warning: {warning}")
    if not service.pipelines:
        show(f"warning: {args.path} builds no pipeline; run would only serve [web] (if set) until stopped")
    app.preflight()  # PreflightError: main prints each failure on its line, exit code 2
    show("ok: configuration is valid (nothing was connected)")
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


def _log_level(text: str) -> str:
    name = text.strip().upper()
    if name not in logging.getLevelNamesMapping():
        raise argparse.ArgumentTypeError(f"unknown log level {text!r} (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bspump", description="Run and inspect bspump pipelines.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bspump {__version__}")
    parser.add_argument("--log-level", type=_log_level, default=os.environ.get("BSPUMP_LOG_LEVEL", "WARNING"),
                        help="logging level (default WARNING; env BSPUMP_LOG_LEVEL); DEBUG also shows the Python "
                             "traceback of every error")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run a pipelines.conf, a Python file, or a folder holding one", epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a pipelines.conf, a Python file, or a folder holding one, until every pipeline finished "
                    "or SIGINT/SIGTERM stops it gracefully (a second signal stops it at once). The summary of "
                    "what was read and acknowledged goes to stderr.")
    run.add_argument("path")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line on a terminal")
    run.set_defaults(handler=command_run)
    check = commands.add_parser("check", help="validate a configuration without connecting",
                                description=CHECK_DESCRIPTION, epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    """Entry point of the ``bspump`` command; the exit codes are listed in :data:`EXIT_CODES`."""
    args = build_parser().parse_args(argv)
    level = logging.getLevelNamesMapping()[args.log_level]
    args.tracebacks = level <= logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", args.tracebacks))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        result: Any = args.handler(args)
    except KeyboardInterrupt:  # a signal before the application installed its handlers, or after it ended
        _error("interrupted", args)
        return 128 + signal.SIGINT
    except StartupError as exc:
        _error(str(exc), args)
        return 1
    except (UsageError, BSPumpError) as exc:  # ConfigError is a BSPumpError
        _error(str(exc), args)
        return 2
    except ScriptError as exc:
        _error(f"{exc} (--log-level DEBUG shows the traceback)", args)
        return 1
    except Exception as exc:
        _error(f"{describe_error(exc)} (--log-level DEBUG shows the traceback)", args)
        return 1
    return int(result)


def _error(message: str, args: argparse.Namespace) -> None:
    """``bspump: error: ...`` for each line of ``message``, the traceback first if asked for; configured
    secrets masked once the application exists."""
    app: BSPumpApplication | None = getattr(args, "app", None)
    mask = app.secrets.mask if app is not None else redact_value
    if args.tracebacks:
        sys.stderr.write(mask("".join(traceback.format_exc())))
    for line in message.splitlines() or [""]:
        print(mask(f"bspump: error: {line}"), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
