#!/usr/bin/env python3
"""Install, start, stop and inspect the bspump integration-test servers.

Stdlib only. Called by ``run.sh``; see ``README.md`` beside this file.

Every server is a private instance bound to 127.0.0.1. Runtime state (data
directories, logs, PID files) lives under ``$BSPUMP_SERVERS_DIR`` (default
``/tmp/bspump-servers``); downloads and builds that are cheap to keep (Maven
repository and Kafka jars, the FerretDB binary, Python venvs) live under
``$BSPUMP_CACHE_DIR`` (default ``~/.cache/bspump``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVERS_DIR = Path(os.environ.get("BSPUMP_SERVERS_DIR") or "/tmp/bspump-servers")
CACHE_DIR = Path(
    os.environ.get("BSPUMP_CACHE_DIR") or Path.home() / ".cache" / "bspump"
)
HOST = "127.0.0.1"

# Pinned versions -------------------------------------------------------------
# BSPUMP_KAFKA_VERSION tries another org.apache.kafka:kafka_2.13 release (4.x) without editing.
KAFKA_VERSION = (
    os.environ.get("BSPUMP_KAFKA_VERSION") or "4.4.0"
)  # default also in kafka/pom.xml
FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
SECANTUSDB_SPEC = "SecantusDB==0.7.0b3"
# BSPUMP_ELASTICSEARCH_VERSION tries another release of the integration-test distribution (8.x works too).
ES_VERSION = os.environ.get("BSPUMP_ELASTICSEARCH_VERSION") or "9.2.0"
ES_ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
ES_MIN_JAVA = 21 if int(ES_VERSION.split(".")[0]) >= 9 else 17
ES_USER = "bspump-es"
PG_MAJOR = "15"

START_TIMEOUT = float(os.environ.get("BSPUMP_SERVERS_START_TIMEOUT", "180"))
STOP_TIMEOUT = 30.0


class HarnessError(RuntimeError):
    """A failure with a message meant for the person running the harness."""


def log(msg: str) -> None:
    print(f"[servers] {msg}", flush=True)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a command, raising HarnessError with its output on failure."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise HarnessError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{tail}"
        )


def tail_file(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log file {path})"
    return "\n".join(data[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; treat it as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# Protocol probes -----------------------------------------------------------------


def tcp_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def probe_postgres(port: int, host: str = HOST) -> bool:
    """Send an SSLRequest; a PostgreSQL server answers with one byte, 'S' or 'N'."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            s.sendall(struct.pack(">ii", 8, 80877103))
            return _recv_exact(s, 1) in (b"S", b"N")
    except OSError:
        return False


def probe_mqtt(port: int, host: str = HOST) -> bool:
    """MQTT 3.1.1 CONNECT, expect CONNACK with return code 0."""
    client_id = b"bspump-probe"
    var_header = b"\x00\x04MQTT\x04\x02\x00\x05"  # clean session, keepalive 5 s
    payload = struct.pack(">H", len(client_id)) + client_id
    body = var_header + payload
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            s.sendall(packet)
            ack = _recv_exact(s, 4)
            s.sendall(b"\xe0\x00")  # DISCONNECT
            return ack[0] == 0x20 and ack[3] == 0
    except OSError:
        return False


def _kstr(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def probe_kafka(port: int, host: str = HOST) -> bool:
    """Metadata v4 request; ready when the broker lists at least one (unfenced) broker."""
    body = (
        struct.pack(">hhi", 3, 4, 1)
        + _kstr("bspump-probe")
        + struct.pack(">i", 0)
        + b"\x00"
    )
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.settimeout(3)
            s.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(s, 4))
            resp = _recv_exact(s, size)
            # correlation_id (4), throttle_time_ms (4), brokers array length (4)
            (brokers,) = struct.unpack(">i", resp[8:12])
            return int(brokers) >= 1
    except (OSError, struct.error):
        return False


def _bson_ping() -> bytes:
    elems = b"\x10ping\x00" + struct.pack("<i", 1)
    db = b"admin\x00"
    elems += b"\x02$db\x00" + struct.pack("<i", len(db)) + db
    return struct.pack("<i", len(elems) + 5) + elems + b"\x00"


def probe_mongo(port: int, host: str = HOST) -> bool:
    """OP_MSG {ping: 1}; ready when the reply carries ok: 1.0."""
    doc = _bson_ping()
    body = struct.pack("<I", 0) + b"\x00" + doc
    header = struct.pack("<iiii", 16 + len(body), 1, 0, 2013)
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.settimeout(3)
            s.sendall(header + body)
            (size,) = struct.unpack("<i", _recv_exact(s, 4))
            resp = _recv_exact(s, size - 4)
            return b"\x01ok\x00" + struct.pack("<d", 1.0) in resp
    except (OSError, struct.error):
        return False


def probe_elasticsearch(port: int, host: str = HOST) -> bool:
    """Cluster health green or yellow (the integration-test distribution has no ``GET /``)."""
    try:
        with urllib.request.urlopen(
            f"http://{host}:{port}/_cluster/health", timeout=3
        ) as resp:
            return json.loads(resp.read()).get("status") in ("green", "yellow")
    except (OSError, ValueError, urllib.error.URLError):
        return False


# Installation helpers ----------------------------------------------------------


_apt_updated = False


def apt_install(*packages: str) -> None:
    """Install Debian packages without starting their system services."""
    global _apt_updated
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise HarnessError(
            f"packages {missing} are missing and apt-get is not available"
        )
    prefix: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        log("apt-get update")
        run([*prefix, "apt-get", "update", "-q"], env=env)
        _apt_updated = True
    # A policy-rc.d that answers 101 keeps the packages' postinst from starting
    # system-wide services (a system PostgreSQL or Mosquitto would take our ports).
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = False
    if os.geteuid() == 0 and not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        added_policy = True
    try:
        log(f"apt-get install {' '.join(missing)}")
        run(
            [
                *prefix,
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                *missing,
            ],
            env=env,
        )
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)


def _dpkg_installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return proc.returncode == 0 and "install ok installed" in proc.stdout


def ensure_venv(name: str, spec: str, probe: str) -> Path:
    """A venv under the cache holding exactly ``spec``; returns its directory."""
    venv = CACHE_DIR / "venv" / name
    marker = venv / ".bspump-installed"
    if (
        marker.is_file()
        and marker.read_text().strip() == spec
        and (venv / probe).exists()
    ):
        return venv
    log(f"creating venv {venv} with {spec}")
    if venv.exists():
        shutil.rmtree(venv)
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", spec])
    if not (venv / probe).exists():
        raise HarnessError(f"{spec} installed into {venv} but {probe} is missing")
    marker.write_text(spec + "\n")
    return venv


def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise HarnessError(f"no site-packages in {venv}")
    return found[0]


# Servers ----------------------------------------------------------------------


class Server:
    name: str = ""
    port: int = 0
    stop_signal: int = signal.SIGTERM

    @property
    def dir(self) -> Path:
        return SERVERS_DIR / self.name

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    # To override ---------------------------------------------------------------
    def install(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Create data directories / config files before the first launch."""

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def probe(self) -> bool:
        raise NotImplementedError

    # Generic behaviour -----------------------------------------------------------
    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def launch(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_file, "ab") as out:
            out.write(
                f"\n===== [servers] starting {self.name} at {time.ctime()} =====\n".encode()
            )
            out.flush()
            proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self.env(),
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")

    def start(self) -> str:
        if self.probe():
            pid = self.read_pid()
            if pid is None or not pid_alive(pid):
                return f"already answering on {HOST}:{self.port} (not started by this harness)"
            return f"already running (pid {pid})"
        if tcp_open(self.port):
            raise HarnessError(
                f"{self.name}: port {HOST}:{self.port} is taken by something that does not answer "
                f"as {self.name}; free the port first"
            )
        self.stop(quiet=True)  # clear a stale PID file / half-dead process
        self.launch()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.probe():
                return f"started (pid {self.read_pid()}) on {HOST}:{self.port}"
            pid = self.read_pid()
            if pid is not None and not pid_alive(pid):
                raise HarnessError(
                    f"{self.name} exited during start-up; log {self.log_file}:\n"
                    f"{tail_file(self.log_file)}"
                )
            time.sleep(0.2)
        tail = tail_file(self.log_file)  # before stopping: the state at the time-out
        self.stop(quiet=True)
        raise HarnessError(
            f"{self.name} did not answer on {HOST}:{self.port} within {START_TIMEOUT:.0f} s "
            f"and was stopped; log {self.log_file}:\n{tail}"
        )

    def stop(self, quiet: bool = False) -> str:
        pid = self.read_pid()
        if pid is None:
            return "not running (no PID file)"
        if not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return f"not running (stale PID file, pid {pid})"
        self._signal(pid, self.stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            if not quiet:
                log(
                    f"{self.name}: pid {pid} ignored {signal.Signals(self.stop_signal).name} "
                    f"for {STOP_TIMEOUT:.0f} s, sending SIGKILL"
                )
            self._signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.1)
        self._signal(pid, signal.SIGKILL, group_only=True)  # stray children, if any
        self.pid_file.unlink(missing_ok=True)
        return f"stopped (pid {pid})"

    @staticmethod
    def _signal(pid: int, sig: int, group_only: bool = False) -> None:
        try:
            os.killpg(pid, sig)  # launched with start_new_session: pgid == pid
        except (ProcessLookupError, PermissionError):
            if group_only:
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def status(self) -> str:
        pid = self.read_pid()
        up = self.probe()
        where = f"{HOST}:{self.port}"
        if up:
            owner = f"pid {pid}" if pid is not None and pid_alive(pid) else "not ours"
            return f"up on {where} ({owner}); log {self.log_file}"
        if pid is not None and pid_alive(pid):
            return (
                f"NOT answering on {where} but pid {pid} is alive; log {self.log_file}"
            )
        return f"down ({where})"


class PostgreSQL(Server):
    name = "postgresql"
    port = 5432
    # SIGINT is PostgreSQL's "fast shutdown"; SIGTERM ("smart") would wait for clients.
    stop_signal = signal.SIGINT
    bindir = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")

    def install(self) -> None:
        apt_install(f"postgresql-{PG_MAJOR}")

    def _as_postgres(self, *cmd: str | Path) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *map(str, cmd)]
        return [str(c) for c in cmd]

    def prepare(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            if self.log_file.exists():
                shutil.chown(self.log_file, "postgres", "postgres")
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            run(
                self._as_postgres(
                    self.bindir / "initdb", "-D", self.data_dir, "-U", "postgres",
                    "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync",
                )
            )  # fmt: skip

    def launch(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        options = (
            f"-c listen_addresses={HOST} -p {self.port} -k /tmp -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            # Logical decoding for change data capture (bspump-postgresql's CDC source and its tests, which
            # create many short-lived slots).
            "-c wal_level=logical -c max_replication_slots=64 -c max_wal_senders=16"
        )
        run(
            self._as_postgres(
                self.bindir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file,
                "-w", "-t", str(int(START_TIMEOUT)), "-o", options, "start",
            )
        )  # fmt: skip
        # pg_ctl has written postmaster.pid; its first line is the postmaster's PID.
        pid = (self.data_dir / "postmaster.pid").read_text().split()[0]
        self.pid_file.write_text(f"{pid}\n")

    def probe(self) -> bool:
        return probe_postgres(self.port)


class Mosquitto(Server):
    name = "mosquitto"
    port = 1883

    def install(self) -> None:
        apt_install("mosquitto")

    def prepare(self) -> None:
        (self.dir / "mosquitto.conf").write_text(
            (HERE / "mosquitto" / "mosquitto.conf")
            .read_text()
            .replace("@PORT@", str(self.port))
            .replace("@DIR@", str(self.data_dir))
        )
        # Started as root, Mosquitto drops to the `mosquitto` user, which must be able to write its database.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                import pwd

                account = pwd.getpwnam("mosquitto")
            except KeyError:
                return
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)

    def command(self) -> list[str]:
        return ["/usr/sbin/mosquitto", "-c", str(self.dir / "mosquitto.conf")]

    def probe(self) -> bool:
        return probe_mqtt(self.port)


class Kafka(Server):
    name = "kafka"
    port = 9092
    controller_port = 9093

    @property
    def lib_dir(self) -> Path:
        return CACHE_DIR / "kafka" / KAFKA_VERSION / "lib"

    def install(self) -> None:
        if shutil.which("java") is None:
            apt_install("openjdk-17-jre-headless")
        marker = self.lib_dir / ".complete"
        if marker.is_file():
            return
        if shutil.which("mvn") is None:
            apt_install("maven")
        if self.lib_dir.exists():
            shutil.rmtree(self.lib_dir)
        log(
            f"resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central into {self.lib_dir}"
        )
        run(
            [
                "mvn", "-q", "-B", "-f", HERE / "kafka" / "pom.xml",
                f"-Dmaven.repo.local={CACHE_DIR / 'm2'}",
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies", f"-DoutputDirectory={self.lib_dir}",
            ]
        )  # fmt: skip
        if not (self.lib_dir / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise HarnessError(
                f"kafka: Maven did not produce kafka_2.13-{KAFKA_VERSION}.jar"
            )
        marker.write_text(KAFKA_VERSION + "\n")

    def java(self, main: str, *args: str) -> list[str]:
        heap = os.environ.get("BSPUMP_KAFKA_HEAP", "-Xms256m -Xmx768m").split()
        return [
            "java", *heap,
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp", f"{self.lib_dir}/*",
            main, *args,
        ]  # fmt: skip

    def prepare(self) -> None:
        props = self.dir / "server.properties"
        props.write_text(
            (HERE / "kafka" / "server.properties")
            .read_text()
            .replace("@PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@DATA_DIR@", str(self.data_dir))
        )
        shutil.copyfile(
            HERE / "kafka" / "log4j2.properties", self.dir / "log4j2.properties"
        )
        stamp = self.dir / "data-version"
        formatted = (self.data_dir / "meta.properties").is_file()
        if formatted and stamp.is_file() and stamp.read_text().strip() == KAFKA_VERSION:
            return
        if formatted:
            # Metadata written by another Kafka release may not load (older releases cannot
            # read newer records): test data is disposable, so start from a fresh log.
            log(
                f"kafka: {self.data_dir} was formatted by another Kafka version; re-formatting"
            )
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        cluster_id = ""
        while not cluster_id or cluster_id.startswith("-"):
            cluster_id = (
                base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            )
        run(
            self.java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)
            )
        )
        stamp.write_text(KAFKA_VERSION + "\n")

    def command(self) -> list[str]:
        return self.java("kafka.Kafka", str(self.dir / "server.properties"))

    def probe(self) -> bool:
        return probe_kafka(self.port)


class FerretDB(Server):
    name = "ferretdb"
    port = 27017

    @property
    def binary(self) -> Path:
        return CACHE_DIR / "bin" / f"ferretdb-{FERRETDB_VERSION}"

    def install(self) -> None:
        if self.binary.is_file():
            return
        go = shutil.which("go") or (
            "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
        )
        if go is None:
            apt_install("golang-go")
            go = "go"
        log(
            f"building FerretDB {FERRETDB_VERSION} with {go} (sources from the Go module proxy)"
        )
        env = dict(
            os.environ,
            GOMODCACHE=str(CACHE_DIR / "go" / "mod"),
            GOCACHE=str(CACHE_DIR / "go" / "build"),
            GOFLAGS="-modcacherw",
            CGO_ENABLED="0",
        )
        # `go install ...@version` builds a binary that panics at start: FerretDB embeds its
        # version from build/version/version.txt, which its release process generates and
        # the module zip lacks. So: fetch the module, copy it, write that file, build.
        proc = subprocess.run(
            [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise HarnessError(
                f"ferretdb: go mod download failed:\n{proc.stdout}\n{proc.stderr}"
            )
        module_dir = Path(json.loads(proc.stdout)["Dir"])
        src = CACHE_DIR / "go" / "src" / f"ferretdb-{FERRETDB_VERSION}"
        if src.exists():
            shutil.rmtree(src)
        shutil.copytree(module_dir, src)
        for path in [src, *src.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        (src / "build" / "version" / "package.txt").write_text("bspump-tests\n")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.binary.with_suffix(".tmp")
        run([go, "build", "-trimpath", "-o", tmp, "./cmd/ferretdb"], env=env, cwd=src)
        tmp.rename(self.binary)
        shutil.rmtree(src)

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.binary),
            f"--listen-addr={HOST}:{self.port}",
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/",
            "--state-dir=" + str(self.dir),
            "--telemetry=disable",
            "--log-level=WARN",
            "--debug-addr=-",
        ]

    def probe(self) -> bool:
        return probe_mongo(self.port)


class SecantusDB(Server):
    name = "secantusdb"
    port = 27018

    def install(self) -> None:
        ensure_venv("secantusdb", SECANTUSDB_SPEC, "bin/secantusd-py")

    def command(self) -> list[str]:
        venv = CACHE_DIR / "venv" / "secantusdb"
        return [
            str(venv / "bin" / "secantusd-py"),
            "--host", HOST, "--port", str(self.port),
            "--storage-path", str(self.data_dir),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def probe(self) -> bool:
        return probe_mongo(self.port)


class Elasticsearch(Server):
    """The real Elasticsearch, from its integration-test distribution on Maven Central.

    That distribution bundles no JDK (``ES_JAVA_HOME`` must name a Java 21+) and holds only the core modules:
    no ingest-common, painless, data streams or rest-root (``GET /`` answers 405; readiness is cluster
    health). Elasticsearch refuses to run as root, so as root the harness runs it as the system user
    ``ES_USER``, who owns the unpacked distribution, its configuration, data and logs under the servers dir
    (the Maven cache under ``$HOME`` may not be readable by that user).
    """

    name = "elasticsearch"
    port = 9200
    transport_port = 9300

    @property
    def home(self) -> Path:
        return self.dir / f"elasticsearch-{ES_VERSION}"

    @property
    def conf_dir(self) -> Path:
        return self.dir / "config"

    @property
    def zip_file(self) -> Path:
        return (
            CACHE_DIR / "m2" / "org" / "elasticsearch" / "distribution" / "integ-test-zip"
            / "elasticsearch" / ES_VERSION / f"elasticsearch-{ES_VERSION}.zip"
        )  # fmt: skip

    def install(self) -> None:
        find_java_home(ES_MIN_JAVA)  # fail early, before a download, when no suitable Java exists
        if not self.zip_file.is_file():
            if shutil.which("mvn") is None:
                apt_install("maven")
            log(f"resolving {ES_ARTIFACT} from Maven Central into {CACHE_DIR / 'm2'}")
            run(
                [
                    "mvn", "-q", "-B", f"-Dmaven.repo.local={CACHE_DIR / 'm2'}",
                    "dependency:get", f"-Dartifact={ES_ARTIFACT}", "-Dtransitive=false",
                ]
            )  # fmt: skip
            if not self.zip_file.is_file():
                raise HarnessError(f"elasticsearch: Maven did not produce {self.zip_file}")
        if os.geteuid() == 0:
            ensure_system_user(ES_USER)
        marker = self.home / ".bspump-unpacked"
        if not marker.is_file():
            if self.home.exists():
                shutil.rmtree(self.home)
            self.dir.mkdir(parents=True, exist_ok=True)
            log(f"unpacking {self.zip_file.name} into {self.dir}")
            run(["unzip", "-q", "-o", self.zip_file, "-d", self.dir])
            marker.write_text(ES_VERSION + "\n")

    def prepare(self) -> None:
        if self.conf_dir.exists():
            shutil.rmtree(self.conf_dir)
        shutil.copytree(self.home / "config", self.conf_dir)
        settings = (
            (HERE / "elasticsearch" / "elasticsearch.yml")
            .read_text()
            .replace("@HOST@", HOST)
            .replace("@PORT@", str(self.port))
            .replace("@TRANSPORT_PORT@", str(self.transport_port))
            .replace("@DATA_DIR@", str(self.data_dir))
            .replace("@LOGS_DIR@", str(self.dir / "logs"))
        )
        (self.conf_dir / "elasticsearch.yml").write_text(settings)
        stamp = self.dir / "data-version"
        if self.data_dir.exists() and not (
            stamp.is_file() and stamp.read_text().strip() == ES_VERSION
        ):
            # Data of another server on this port (the emulator used before) or of another release (an
            # index written by a newer one does not load): test data is disposable, start afresh.
            log(f"elasticsearch: {self.data_dir} holds no data of {ES_VERSION}; starting empty")
            shutil.rmtree(self.data_dir)
        stamp.write_text(ES_VERSION + "\n")
        for folder in (self.data_dir, self.dir / "logs", self.dir / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            run(["chown", "-R", f"{ES_USER}:{ES_USER}", self.dir])

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("JAVA_HOME", None)
        env.update(
            ES_JAVA_HOME=str(find_java_home(ES_MIN_JAVA)),
            ES_PATH_CONF=str(self.conf_dir),
            ES_TMPDIR=str(self.dir / "tmp"),
            ES_JAVA_OPTS=os.environ.get("BSPUMP_ELASTICSEARCH_HEAP", "-Xms512m -Xmx512m"),
        )
        return env

    def command(self) -> list[str]:
        # In the foreground: the harness records the PID and stops the process group (the launcher and
        # the server JVM it forks), which Elasticsearch takes as a graceful shutdown.
        command = [str(self.home / "bin" / "elasticsearch")]
        if os.geteuid() == 0:
            # runuser resets the environment unless told to keep it (-m keeps ES_* variables).
            return ["runuser", "-u", ES_USER, "-m", "--", *command]
        return command

    def probe(self) -> bool:
        return probe_elasticsearch(self.port)


def java_major(home: Path) -> int | None:
    """The feature release of the JDK/JRE at ``home``, from its ``release`` file."""
    try:
        for line in (home / "release").read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                version = line.partition("=")[2].strip().strip('"')
                head = version.split(".")[0]
                return int(version.split(".")[1]) if head == "1" else int(head)
    except (OSError, ValueError, IndexError):
        return None
    return None


def find_java_home(minimum: int) -> Path:
    """``ES_JAVA_HOME`` if set (it must qualify), else the newest Java >= ``minimum`` in /usr/lib/jvm."""
    explicit = os.environ.get("ES_JAVA_HOME")
    if explicit:
        major = java_major(Path(explicit))
        if not (Path(explicit) / "bin" / "java").is_file() or major is None or major < minimum:
            raise HarnessError(
                f"ES_JAVA_HOME={explicit} is not a Java {minimum}+ (found {major or 'no Java'}); "
                f"unset it or point it at a JDK {minimum} or newer"
            )
        return Path(explicit)
    found: list[tuple[int, Path]] = []
    jvm = Path("/usr/lib/jvm")
    for home in sorted(jvm.iterdir()) if jvm.is_dir() else []:
        major = java_major(home)
        if major is not None and major >= minimum and (home / "bin" / "java").is_file():
            found.append((major, home))
    if not found:
        raise HarnessError(
            f"elasticsearch {ES_VERSION} needs Java {minimum} or newer and none is installed in /usr/lib/jvm; "
            f"install one (e.g. apt-get install openjdk-{minimum}-jdk-headless or a Temurin JDK) or set "
            "ES_JAVA_HOME"
        )
    return max(found)[1]


def ensure_system_user(name: str) -> None:
    """An unprivileged system account without a home directory (servers that refuse to run as root)."""
    probe = subprocess.run(["id", "-u", name], check=False, capture_output=True)
    if probe.returncode == 0:
        return
    log(f"creating system user {name}")
    run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "-U", name])


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        PostgreSQL(),
        Mosquitto(),
        Kafka(),
        FerretDB(),
        SecantusDB(),
        Elasticsearch(),
    )
}
ACTIONS = ("install", "start", "stop", "restart", "status")


def timed(fn: Callable[[], str | None]) -> tuple[float, str | None]:
    t0 = time.monotonic()
    result = fn()
    return time.monotonic() - t0, result


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(f"usage: run.sh {{{'|'.join(ACTIONS)}}} [all | {' '.join(SERVERS)}]...")
        return 0 if argv else 2
    action, names = argv[0], list(argv[1:]) or ["all"]
    if action not in ACTIONS:
        print(
            f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}",
            file=sys.stderr,
        )
        return 2
    selected: list[Server] = []
    for name in names:
        if name == "all":
            selected.extend(SERVERS.values())
        elif name in SERVERS:
            selected.append(SERVERS[name])
        else:
            print(
                f"unknown server {name!r}; expected all or one of {', '.join(SERVERS)}",
                file=sys.stderr,
            )
            return 2
    selected = list(dict.fromkeys(selected))
    SERVERS_DIR.mkdir(parents=True, exist_ok=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)

    failures: list[str] = []
    down: list[str] = []
    t_all = time.monotonic()
    for server in selected:
        try:
            if action == "status":
                line = server.status()
                print(f"{server.name:14} {line}")
                if not line.startswith("up "):
                    down.append(server.name)
                continue
            if action == "stop":
                print(f"{server.name:14} {server.stop()}", flush=True)
                continue
            if action == "restart":
                server.stop()
            t_install, _ = timed(server.install)
            if action == "install":
                print(f"{server.name:14} installed in {t_install:6.1f} s", flush=True)
                continue
            t_start, message = timed(server.start)
            print(
                f"{server.name:14} install {t_install:6.1f} s, start {t_start:6.1f} s: {message}",
                flush=True,
            )
        except HarnessError as exc:
            failures.append(server.name)
            print(f"{server.name:14} FAILED: {exc}", file=sys.stderr, flush=True)
    if action in ("install", "start", "restart"):
        print(
            f"{'total':14} {time.monotonic() - t_all:6.1f} s ({action} {' '.join(s.name for s in selected)})"
        )
    if failures:
        print(f"[servers] {action} failed for: {' '.join(failures)}", file=sys.stderr)
        return 1
    return (
        3 if down else 0
    )  # status: 3 = some server is not answering (as LSB init scripts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
