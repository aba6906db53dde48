"""Every developer task is a nox session: `nox -l` lists them.

Extra arguments after `--` go to pytest (e.g. `nox -s integration -- -k kafka`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
CONNECTORS = [p for p in PACKAGES if p != "bspump-core"]
PYTHON = os.environ.get("BSPUMP_NOX_PYTHON", "3.11")
TEST_TOOLS = ["pytest>=8", "pytest-asyncio>=0.24"]

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
#: What ./dev test runs. wheel_install (which builds the packages first, as `nox -s build` does) and notebooks
#: come after integration, which starts the test servers: their Kafka parts then run, not skip.
nox.options.sessions = ["lint", "typing", "core_install", "tests", "tests_lowest", "tests_all", "docs", "template",
                        "integration", "wheel_install", "notebooks"]


def _editable(*packages: str) -> list[str]:
    args: list[str] = []
    for package in packages:
        args += ["-e", str(ROOT / "packages" / package)]
    return args


def _extras(package: str) -> str:
    """Connector test suites run with every optional client of the package installed: all the extras its
    pyproject.toml declares (``[confluent]`` for bspump-kafka), read from it rather than listed here."""
    pyproject = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text(encoding="utf-8"))
    extras = sorted(pyproject["project"].get("optional-dependencies", {}))
    return f"[{','.join(extras)}]" if extras else ""


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Unit tests of one package, in a venv holding only bspump-core and that package."""
    installs = _editable("bspump-core")
    if package != "bspump-core":
        installs += ["-e", f"{ROOT / 'packages' / package}{_extras(package)}"]
    session.install(*TEST_TOOLS, *installs)
    session.run("pytest", str(ROOT / "packages" / package / "tests"), "-q", *session.posargs)


@nox.session(python=PYTHON, venv_backend="uv")
@nox.parametrize("package", PACKAGES)
def tests_lowest(session: nox.Session, package: str) -> None:
    """Unit tests of one package with the lowest versions its pyproject.toml allows of each dependency it names
    (uv's lowest-direct resolution): the floors we declare are floors we tested."""
    installs = _editable("bspump-core")
    if package != "bspump-core":
        installs += ["-e", f"{ROOT / 'packages' / package}{_extras(package)}"]
    session.install("--resolution", "lowest-direct", *TEST_TOOLS, *installs)
    session.run("pytest", str(ROOT / "packages" / package / "tests"), "-q", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv", reuse_venv=False)
def core_install(session: nox.Session) -> None:
    """`pip install packages/bspump-core` into an empty venv installs no connector client."""
    session.install(str(ROOT / "packages" / "bspump-core"))
    session.run("python", str(ROOT / "scripts" / "check_selective_install.py"), str(ROOT), "bspump-core")


@nox.session(python=PYTHON)
def tests_all(session: nox.Session) -> None:
    """Every package's unit tests together, with every package installed (the core's downstream check)."""
    session.install(*TEST_TOOLS, *_editable("bspump-core"),
                    *[arg for p in CONNECTORS for arg in ("-e", f"{ROOT / 'packages' / p}{_extras(p)}")])
    for package in PACKAGES:
        session.run("pytest", str(ROOT / "packages" / package / "tests"), "-q", *session.posargs)


#: The plugin the template session generates: a name of two parts, so that its classes are AcmeDbConnection...
TEMPLATE_PLUGIN = "acme_db"


@nox.session(python=PYTHON, reuse_venv=False)
def template(session: nox.Session) -> None:
    """`bspump new-plugin` end to end: the plugin it writes, installed into an empty venv with bspump-core alone,
    is listed by `bspump plugins` with its types and passes its own tests; then ruff and mypy --strict over it."""
    # Installed as a user installs it: a wheel (so the template files must ship in it), built from the working
    # tree every time (uv would reuse a wheel it built before from the same path).
    rebuild = ["--reinstall-package", "bspump-core"] if session.venv_backend == "uv" else []
    session.install(*rebuild, str(ROOT / "packages" / "bspump-core"))
    with tempfile.TemporaryDirectory(prefix="bspump-template-") as folder:
        session.run("bspump", "new-plugin", TEMPLATE_PLUGIN, "--directory", folder)
        plugin = Path(folder) / f"bspump-{TEMPLATE_PLUGIN.replace('_', '-')}"
        session.install(f"{plugin}[test]")
        _check_plugin_listed(session, session.run("bspump", "plugins", "--json", silent=True))
        with session.chdir(plugin):
            session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
            session.install("ruff>=0.8", "mypy>=1.13")
            session.run("ruff", "check", "--no-cache", ".")
            session.run("mypy", "--cache-dir", str(Path(folder) / "mypy-cache"))


def _check_plugin_listed(session: nox.Session, listing: object) -> None:
    """`bspump plugins --json` lists the generated plugin as loaded, from its distribution, with its three types."""
    prefix = "".join(part.capitalize() for part in TEMPLATE_PLUGIN.split("_"))
    expected = [f"connection:{TEMPLATE_PLUGIN}.{prefix}Connection", f"source:{TEMPLATE_PLUGIN}.{prefix}Source",
                f"sink:{TEMPLATE_PLUGIN}.{prefix}Sink"]
    rows = {row["name"]: row for row in json.loads(str(listing))}
    row = rows.get(TEMPLATE_PLUGIN)
    if row is None:
        session.error(f"bspump plugins does not list {TEMPLATE_PLUGIN} (it lists {', '.join(rows)})")
    found = (row["status"], row["distribution"], row["types"], row["error"])
    if found != ("loaded", f"bspump-{TEMPLATE_PLUGIN.replace('_', '-')}", expected, None):
        session.error(f"bspump plugins lists {TEMPLATE_PLUGIN} as {found}; expected loaded with {expected}")
    session.log(f"bspump plugins: {TEMPLATE_PLUGIN} loaded with {', '.join(expected)}")


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Start the test servers when they are not running, then run tests-integration/ against them."""
    session.install(*TEST_TOOLS, "-r", str(ROOT / "tests-integration" / "requirements.txt"),
                    *_editable("bspump-core"),
                    *[arg for p in CONNECTORS for arg in ("-e", f"{ROOT / 'packages' / p}{_extras(p)}")])
    if not os.environ.get("BSPUMP_SERVERS_EXTERNAL"):
        session.run("bash", str(ROOT / "tests-integration" / "servers" / "run.sh"), "start", "all", external=True)
    session.run("pytest", str(ROOT / "tests-integration"), "-q", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", str(ROOT))


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy: strict on bspump-core, and on each connector with its client installed."""
    session.install("mypy>=1.13", *TEST_TOOLS, *_editable("bspump-core"),
                    *[arg for p in CONNECTORS for arg in ("-e", f"{ROOT / 'packages' / p}{_extras(p)}")])
    session.run("mypy", "--strict", str(ROOT / "packages" / "bspump-core" / "src" / "bspump"))
    for package in CONNECTORS:
        # Each connector's own pyproject.toml says how strict to be and which clients lack type hints.
        with session.chdir(ROOT / "packages" / package):
            session.run("mypy", "src")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx site (warnings are errors) and run the Python examples of every page."""
    session.install("sphinx>=8", *TEST_TOOLS, *_editable("bspump-core"),
                    *[arg for p in CONNECTORS for arg in ("-e", f"{ROOT / 'packages' / p}")])
    session.run("sphinx-build", "-W", "-q", "-b", "html", str(ROOT / "docs"), str(ROOT / "docs" / "_build" / "html"))
    # The examples of every page, and every connector's reference page against its classes' ConfigDefaults.
    session.run("pytest", str(ROOT / "docs" / "test_examples.py"), str(ROOT / "docs" / "test_reference_pages.py"),
                "-q", *session.posargs)


@nox.session(python=PYTHON)
def notebooks(session: nox.Session) -> None:
    """Execute the notebooks of docs/notebooks/ in a real kernel (nbclient + ipykernel), every package installed;
    their Kafka part runs when a broker answers at BSPUMP_TEST_KAFKA and is skipped otherwise."""
    session.install(*TEST_TOOLS, "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", *_editable("bspump-core"),
                    *[arg for p in CONNECTORS for arg in ("-e", f"{ROOT / 'packages' / p}{_extras(p)}")])
    session.run("pytest", str(ROOT / "docs" / "notebooks" / "test_notebooks.py"), "-q", "-p", "no:cacheprovider",
                *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints its figures and ends with a JSON line (Kafka ones need the servers)."""
    session.install(*_editable("bspump-core"))
    session.run("python", str(ROOT / "benchmarks" / "core_throughput.py"), *session.posargs)
    if (ROOT / "benchmarks" / "kafka_throughput.py").is_file() and "bspump-kafka" in CONNECTORS:
        session.install("-e", f"{ROOT / 'packages' / 'bspump-kafka'}[confluent]")
        session.run("bash", str(ROOT / "tests-integration" / "servers" / "run.sh"), "start", "kafka", external=True)
        session.run("python", str(ROOT / "benchmarks" / "kafka_throughput.py"))


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The quickstart: a real pipeline over bundled access logs, no server needed."""
    session.install(*_editable("bspump-core"))
    session.run("bspump", "run", str(ROOT / "examples" / "quickstart"))


@nox.session(python=PYTHON)
def example(session: nox.Session) -> None:
    """The orders example end to end: PostgreSQL -> CDC -> Kafka -> Elasticsearch and MongoDB, on the test
    servers (started through the harness), with load, progress and the final counts of every side."""
    session.install("-r", str(ROOT / "tests-integration" / "requirements.txt"), *_editable("bspump-core"),
                    *[arg for p in CONNECTORS for arg in ("-e", f"{ROOT / 'packages' / p}{_extras(p)}")])
    session.run("python", str(ROOT / "examples" / "orders" / "run.py"), *session.posargs)


def _build_all(session: nox.Session) -> Path:
    """Wheel and sdist of every package, with hatch, into dist/ (emptied first: only this tree's artefacts)."""
    session.install("hatch>=1.13")
    session.run("python", str(ROOT / "scripts" / "release.py"), "check")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    # Hatch's own environments (its build env holding hatchling) live in this session's venv, not in the
    # user's ~/.local/share/hatch. Nox's UV_PYTHON (this session's venv) is unset, or hatch's installer (uv)
    # would put hatchling there instead of into its build env.
    hatch_data = {"HATCH_DATA_DIR": str(Path(session.virtualenv.location) / "hatch-data"), "UV_PYTHON": None,
                  "UV_PROJECT_ENVIRONMENT": None}
    for package in PACKAGES:
        with session.chdir(ROOT / "packages" / package):
            session.run("hatch", "build", "-t", "wheel", "-t", "sdist", str(dist), env=hatch_data)
    return dist


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Wheel and sdist of every package in dist/, after checking versions, changelogs and bspump-core ranges
    (and testing those checks: scripts/tests)."""
    session.install("pytest>=8")
    session.run("pytest", str(ROOT / "scripts" / "tests"), "-q", "-p", "no:cacheprovider")
    dist = _build_all(session)
    # What PyPI will check on upload (metadata, the README as the long description), checked now.
    session.install("twine>=5")
    session.run("twine", "check", "--strict", *sorted(str(p) for p in dist.iterdir()))
    session.log("built: " + ", ".join(sorted(p.name for p in dist.iterdir())))


#: What a package's smoke script returns when what it needs (a server) is not there.
SMOKE_SKIPPED = 77
#: Seconds a smoke script may take (a server that accepts connections but never answers must not hang CI).
SMOKE_TIMEOUT = 300


def _wheel(dist: Path, package: str) -> Path:
    project = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wheels = list(dist.glob(f"{project['name'].replace('-', '_')}-{project['version']}-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel of {package} {project['version']} in {dist}, found {wheels}")
    return wheels[0]


@nox.session(python=PYTHON)
def wheel_install(session: nox.Session) -> None:
    """For each connector: its wheel and bspump-core's in an empty venv, nothing of the other connectors, and
    a pipeline through it (the package's own tests/smoke_install.py; exit 77 = its server is not up).

    Every connector of this repository must have one: a connector without it fails the session."""
    dist = _build_all(session)
    outcomes: list[str] = []
    for package in CONNECTORS:
        with tempfile.TemporaryDirectory(prefix=f"{package}-wheel-") as folder:
            venv = Path(folder) / "venv"
            python = str(venv / "bin" / "python")
            session.run("uv", "venv", "--quiet", "--python", PYTHON, str(venv), external=True)
            session.run("uv", "pip", "install", "--quiet", "--python", python, str(_wheel(dist, "bspump-core")),
                        str(_wheel(dist, package)), external=True)
            with session.chdir(folder):  # away from the source tree: only the installed wheels import
                session.run(python, str(ROOT / "scripts" / "check_selective_install.py"), str(ROOT), package,
                            external=True)
                session.run(str(venv / "bin" / "bspump"), "plugins", external=True)
                smoke = ROOT / "packages" / package / "tests" / "smoke_install.py"
                if not smoke.is_file():
                    session.error(f"{package} has no tests/smoke_install.py: write one that runs a pipeline "
                                  "through the installed wheel (see packages/bspump-kafka/tests/smoke_install.py)")
                session.log(f"{python} {smoke}")
                try:
                    code = subprocess.run([python, str(smoke)], cwd=folder, check=False,
                                          timeout=SMOKE_TIMEOUT).returncode
                except subprocess.TimeoutExpired:
                    session.error(f"{package}: {smoke.relative_to(ROOT)} did not end within {SMOKE_TIMEOUT}s")
                if code not in (0, SMOKE_SKIPPED):
                    session.error(f"{package}: {smoke.relative_to(ROOT)} failed (exit code {code})")
                outcomes.append(f"{package}: installed alone; smoke " + ("skipped (its server is not up)"
                                                                          if code == SMOKE_SKIPPED else "passed"))
    for outcome in outcomes:
        session.log(outcome)
