"""The container image, built from the Dockerfile and run: MLLP and C-STORE from outside, Bundles in the volume.

No registry is reachable here, so ``scripts/build-image.sh`` builds the base image (ARG BASE) with debootstrap
from the Debian mirror (once per machine) and the image with ``podman build --isolation chroot``; the engine
runs inside it with ``buildah run --isolation chroot --network host`` (``podman run`` needs setrlimit, which
this sandbox refuses). Peers are the host's dcmtk ``storescu`` and python-hl7's ``mllp_send``.
Skipped where podman/buildah/debootstrap are missing or not root; under CI=true on Debian that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT.parent / "shared" / "testdata"
TAG = "localhost/imaging-report-engine:test"
ORU = TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-13-v2.7-Final-20250814-22.hl7"
SR = TESTDATA / "dicom-sr-pydicom" / "test-SR.dcm"
ENGINE_UID = 10001

pytestmark = pytest.mark.integration


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true" and Path("/etc/debian_version").is_file():
        pytest.fail(f"container image test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine_image(request: pytest.FixtureRequest) -> str:
    missing = [t for t in ("podman", "buildah", "debootstrap", "storescu") if shutil.which(t) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed (scripts/install-system-deps.sh)")
    if os.geteuid() != 0:
        _unavailable("building the debootstrap base image needs root")
    t0 = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh"), TAG], capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        pytest.fail(f"image build failed:\n{result.stdout}\n{result.stderr[-4000:]}", pytrace=False)
    _report(request, f"{' / '.join(result.stdout.split(chr(10))).strip(' /')} (total {time.monotonic() - t0:.1f}s)")
    return TAG


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """Timings on the terminal even under output capture (build and start-up figures for the README)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[container] {line}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (chroot isolation shares the host's PID namespace)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Container:
    name: str
    data: Path
    process: subprocess.Popen[bytes]
    env: dict[str, int]
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.env['ENGINE_HEALTH_PORT']}{path}"

    def engine_pid(self) -> int:
        """The engine's python process inside the container (its uid is the image's user)."""
        for pid in _descendants(self.process.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                uid = Path(f"/proc/{pid}").stat().st_uid
            except OSError:
                continue
            if uid == ENGINE_UID and any(a.endswith(b"python3") for a in cmdline[:1]) and b"run" in cmdline:
                return pid
        raise AssertionError("engine process not found under buildah run")


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


@pytest.fixture(scope="module")
def container(
    engine_image: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Container]:
    data = tmp_path_factory.mktemp("container-var")
    os.chown(data, ENGINE_UID, ENGINE_UID)  # a bind mount prepared for the image's non-root user
    name = f"engine-test-{os.getpid()}"
    subprocess.run(["buildah", "rm", name], capture_output=True)
    subprocess.run(["buildah", "from", "--name", name, engine_image], check=True, capture_output=True, timeout=120)
    env = {v: _free_port() for v in ("ENGINE_MLLP_PORT", "ENGINE_DICOM_PORT", "ENGINE_HEALTH_PORT")}
    log = data.parent / "engine.log"
    command = ["buildah", "run", "--isolation", "chroot", "--network", "host", "-v", f"{data}:/app/var"]
    for var, port in env.items():
        command += ["-e", f"{var}={port}"]
    # the image's ENTRYPOINT + CMD (buildah run does not apply them itself)
    command += [name, "--", "engine", "run", "--config", "/app/config/docker.yaml"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    box = Container(name, data, process, env, log)
    t0 = time.monotonic()
    try:
        deadline = t0 + 60
        while True:
            assert process.poll() is None, f"engine exited {process.returncode}: {log.read_text()[-2000:]}"
            try:
                if _get(box.url("/readyz"))[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"engine not ready: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        _report(request, f"engine ready {time.monotonic() - t0:.1f}s after buildah run")
        yield box
    finally:
        if process.poll() is None:
            process.kill()  # buildah run SIGKILLs its child when it is signalled
            process.wait(timeout=30)
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120)


def _image_config(tag: str) -> dict[str, Any]:
    out = subprocess.run(["podman", "image", "inspect", tag], check=True, capture_output=True, timeout=60).stdout
    [image] = json.loads(out)
    return dict(image)


def test_image_metadata(engine_image: str) -> None:
    image = _image_config(engine_image)
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert "/app/var" in config["Volumes"]  # the store is on a volume, not in the container layer
    assert {"2575/tcp", "11112/tcp", "8080/tcp"} <= set(config["ExposedPorts"])
    assert config["Entrypoint"] == ["engine"] and config["Cmd"][-1] == "/app/config/docker.yaml"
    assert config["StopSignal"] == "SIGTERM"
    check = image["Healthcheck"]["Test"]
    assert check[0] == "CMD" and "/livez" in check[-1]


def test_data_directory_belongs_to_the_engine_user(engine_image: str, tmp_path: Path) -> None:
    name = f"engine-probe-{os.getpid()}"
    subprocess.run(["buildah", "from", "--name", name, engine_image], check=True, capture_output=True, timeout=120)
    try:
        run = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
        owner = subprocess.run([*run, name, "--", "stat", "-c", "%u:%g %a", "/app/var", "/app/var/store"],
                               capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        assert owner.stdout.split("\n")[:2] == ["10001:10001 770", "10001:10001 770"]
        # a bind mount the image's user cannot write: one clear line and exit 2, not a traceback
        root_owned = tmp_path / "root-owned"
        root_owned.mkdir(mode=0o755)
        env = ["-e", f"ENGINE_HEALTH_PORT={_free_port()}", "-e", f"ENGINE_MLLP_PORT={_free_port()}",
               "-e", f"ENGINE_DICOM_PORT={_free_port()}"]  # fmt: skip
        failed = subprocess.run(
            [*run, "-v", f"{root_owned}:/app/var", *env, name, "--", "engine", "run", "--config",
             "/app/config/docker.yaml"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert failed.returncode != 0
        lines = [json.loads(line) for line in failed.stderr.splitlines() if line.startswith("{")]
        [start] = [r for r in lines if r.get("msg") == "cannot start"]
        assert start["error_class"] == "PermissionError" and "/app/var" in start["reason"]
        assert "Traceback" not in failed.stderr
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120)


def test_engine_in_container_answers_mllp_and_c_store(container: Container) -> None:
    mllp_send = Path(sys.executable).with_name("mllp_send")
    sent = subprocess.run(
        [str(mllp_send), "--loose", "-f", str(ORU), "-p", str(container.env["ENGINE_MLLP_PORT"]), "127.0.0.1"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert b"MSA|AA|" in sent.stdout, sent.stdout
    stored = subprocess.run(
        ["storescu", "-aec", "ENGINE", "127.0.0.1", str(container.env["ENGINE_DICOM_PORT"]), str(SR)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr

    outbox = container.data / "outbox"
    deadline = time.monotonic() + 60
    while len(list(outbox.glob("*.json"))) < 2:
        assert time.monotonic() < deadline, f"no Bundles: {container.log.read_text()[-2000:]}"
        time.sleep(0.2)
    # the same Bundles, byte for byte, as `engine map` makes from the same files on the host (deterministic ids)
    expected = container.data.parent / "expected"
    engine = Path(sys.executable).with_name("engine")
    subprocess.run([str(engine), "map", "--out", str(expected), str(ORU), str(SR)], check=True, capture_output=True)
    made = {p.name: p.read_bytes() for p in expected.glob("*.json") if p.name != "summary.json"}
    assert len(made) == 2
    assert {p.name: p.read_bytes() for p in outbox.glob("*.json")} == made
    assert not list((container.data / "dlq").glob("*"))
    # written by the image's user into the bind-mounted volume; the store is there too
    assert {p.stat().st_uid for p in outbox.glob("*.json")} == {ENGINE_UID}
    assert (container.data / "store" / "messages.db").is_file()
    status, metrics = _get(container.url("/readyz"))
    assert status == 200 and metrics["status"] == "ok"


def test_healthcheck_command_runs_inside_the_image(container: Container, engine_image: str) -> None:
    test = _image_config(engine_image)["Healthcheck"]["Test"]
    port = container.env["ENGINE_HEALTH_PORT"]
    probe = ["buildah", "run", "--isolation", "chroot", "--network", "host", "-e", f"ENGINE_HEALTH_PORT={port}"]
    ok = subprocess.run([*probe, container.name, "--", *test[1:]], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    # against a port nothing listens on, the same command reports unhealthy
    bad = [*probe[:-1], f"ENGINE_HEALTH_PORT={_free_port()}", container.name, "--", *test[1:]]
    assert subprocess.run(bad, capture_output=True, timeout=60).returncode != 0


def test_sigterm_drains_and_exits_cleanly(container: Container) -> None:
    """Runs last in this module: SIGTERM to the engine (what `docker stop` sends) -> clean exit 0."""
    os.kill(container.engine_pid(), signal.SIGTERM)
    assert container.process.wait(timeout=30) == 0, container.log.read_text()[-2000:]
    lines = [json.loads(line) for line in container.log.read_text().splitlines() if line.startswith("{")]
    assert any(r.get("msg") == "engine stopped" and r.get("status") == "clean" for r in lines)
