"""Separate hosts for the multi-host test: each part of vidmon a container of vidmon's own
image, on Docker networks, driven with the ``docker`` CLI.

No image registry is reachable from the test machines, so the base is made here: Debian
from its package mirror with ``debootstrap``, a virtual environment on its PATH, the machine's
certificate authorities and its local torch wheel, ``docker import``-ed. The Dockerfile
builds on it as on any base (``--build-arg BASE``). A Docker daemon that is not running is
started (as root), and the images are built on a thread while the session's other tests run
(:func:`prepare_in_background`, from conftest); the daemon stops with the session.
Everything made carries :data:`LABEL`, and whatever an earlier, interrupted run left is
removed before a new one starts.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

LABEL = "vidmon-test-hosts"
BASE_IMAGE = "vidmon-test-base:bookworm"
IMAGE = "vidmon:hosts-test"
SERVICES_IMAGE = "vidmon-services:hosts-test"
TORCH = "2.13.0"
REPO = Path(__file__).resolve().parent.parent
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class DockerError(RuntimeError):
    """A docker command failed; its output is in the message."""


def docker(*args: str, timeout: float = 120, check: bool = True,
           stdin: bytes | None = None) -> str:
    """Run ``docker ARGS``; its standard output (raises :class:`DockerError` on failure when
    ``check``)."""
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=timeout)
    if check and done.returncode != 0:
        raise DockerError(f"docker {' '.join(args[:3])}... exited {done.returncode}: "
                          f"{done.stderr.decode(errors='replace')[-3000:]}")
    return done.stdout.decode(errors="replace")


def _daemon_up() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_daemon(log: Path) -> subprocess.Popen[bytes]:
    """Start dockerd (root only) at a low CPU priority, so that building images beside other
    tests takes what they leave; wait until it answers."""
    with open(log, "wb") as out:
        process = subprocess.Popen(["nice", "-n", "10", "dockerd"], stdout=out,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not _daemon_up():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise DockerError(f"dockerd did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    return process


def _full_priority(daemon: subprocess.Popen[bytes]) -> None:
    """Give dockerd and its containerd back the normal priority (their containers inherit
    it): the hosts themselves run at full speed."""
    found = subprocess.run(["pgrep", "-P", str(daemon.pid)], capture_output=True, text=True)
    for pid in [daemon.pid, *map(int, found.stdout.split())]:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 0)
        except OSError:
            pass


class Preparation:
    """The Docker daemon and the images, made ready on a thread of their own while the
    other tests run (the build is minutes of downloads and unpacking); :meth:`wait` hands
    them over, :meth:`close` stops a daemon started here."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.daemon: subprocess.Popen[bytes] | None = None
        self.seconds: dict[str, float] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._prepare, name="vidmon-hosts-images",
                                        daemon=True)

    def start(self) -> Preparation:
        self._thread.start()
        return self

    def _prepare(self) -> None:
        try:
            if not _daemon_up():
                self.daemon = _start_daemon(self.folder / "dockerd.log")
            remove_leftovers()
            started = time.monotonic()
            work = scratch()
            try:
                base_image(work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            self.seconds["base image"] = time.monotonic() - started
            started = time.monotonic()
            build_images()
            self.seconds["vidmon's image"] = time.monotonic() - started
        except BaseException as error:  # noqa: BLE001 - handed to the test by wait()
            self.error = error

    def wait(self, timeout_s: float = 1800) -> dict[str, float]:
        """Block until the images are built; how long each part took. Raises what the
        preparation raised."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise DockerError(f"the images were not built within {timeout_s:g} s")
        if self.error is not None:
            raise DockerError(f"preparing the hosts failed: {self.error}") from self.error
        if self.daemon is not None:
            _full_priority(self.daemon)
        return self.seconds

    def close(self) -> None:
        """Stop the daemon if it was started here (after the thread, if it still runs)."""
        self._thread.join(60)
        if self.daemon is None:
            return
        self.daemon.terminate()
        try:
            self.daemon.wait(30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()


_preparation: Preparation | None = None


def prepare_in_background() -> Preparation:
    """Start (once per session) making the daemon and the images ready."""
    global _preparation
    if _preparation is None:
        _preparation = Preparation(Path(tempfile.mkdtemp(prefix="vidmon-dockerd-"))).start()
    return _preparation


def finish() -> None:
    """Stop what :func:`prepare_in_background` started."""
    global _preparation
    if _preparation is not None:
        _preparation.close()
        _preparation = None


def usable() -> str | None:
    """Why this machine cannot run the hosts (None: it can)."""
    missing = [p for p in ("dockerd", "docker", "debootstrap", "iptables", "nsenter", "nice",
                           "pgrep") if shutil.which(p) is None]
    if missing:
        return f"{', '.join(missing)} missing (apt-get install docker.io debootstrap)"
    if os.geteuid() != 0:
        return "the multi-host test runs dockerd, debootstrap and nsenter: it needs root"
    return None


def remove_leftovers() -> None:
    """Remove the containers and networks any run of this test made."""
    containers = docker("ps", "-aq", "--filter", f"label={LABEL}").split()
    if containers:
        docker("rm", "-f", "-v", *containers, timeout=120, check=False)
    networks = docker("network", "ls", "-q", "--filter", f"label={LABEL}").split()
    if networks:
        docker("network", "rm", *networks, check=False)


def _image_exists(name: str) -> bool:
    return bool(json.loads(docker("image", "inspect", name, check=False) or "[]"))


def _torch_wheel() -> str | None:
    """The machine's CPU build of torch, from pip's find-links folders, if it has one."""
    for folder in os.environ.get("PIP_FIND_LINKS", "").split():
        found = sorted(glob.glob(f"{folder}/torch-{TORCH}+cpu-cp311-*.whl"))
        if found:
            return found[-1]
    return None


def base_image(work: Path) -> None:
    """Debian bookworm with Python 3.11 in a venv on PATH, as :data:`BASE_IMAGE` (kept
    between runs: it holds no vidmon code)."""
    if _image_exists(BASE_IMAGE):
        return
    root = work / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase",
                    "--include=python3,python3-venv,ca-certificates", "bookworm", str(root),
                    "http://deb.debian.org/debian"], check=True, capture_output=True,
                   timeout=900)
    subprocess.run(["chroot", str(root), "python3", "-m", "venv", "/opt/venv"], check=True,
                   timeout=120)
    # The machine reaches the package registries through its own certificate authorities.
    shutil.copyfile(CA_BUNDLE, root / CA_BUNDLE.lstrip("/"))
    changes = ["ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
               "/sbin:/bin", "ENV LANG=C.UTF-8", f"ENV PIP_CERT={CA_BUNDLE}",
               f"ENV REQUESTS_CA_BUNDLE={CA_BUNDLE}"]
    wheel = _torch_wheel()
    if wheel:  # torch's CPU build as on this machine: pip finds it without PyTorch's index
        (root / "opt/wheels").mkdir(parents=True)
        shutil.copy(wheel, root / "opt/wheels")
        changes.append("ENV PIP_FIND_LINKS=/opt/wheels")
    archive = work / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    shutil.rmtree(root)
    docker("import", *[a for c in changes for a in ("--change", c)], str(archive), BASE_IMAGE,
           timeout=600)
    archive.unlink()


def build_images() -> None:
    """vidmon's image from the Dockerfile on :data:`BASE_IMAGE`, and the services image
    beside it: Debian's PostgreSQL and moto's S3 server (MLflow is in vidmon's)."""
    torch_index = "https://pypi.org/simple" if _torch_wheel() else \
        "https://download.pytorch.org/whl/cpu"
    docker("build", "-q", "--build-arg", f"BASE={BASE_IMAGE}", "--build-arg",
           f"TORCH_INDEX_URL={torch_index}", "-t", IMAGE, str(REPO), timeout=1500)
    services = (f"FROM {BASE_IMAGE}\n"
                "RUN apt-get update -q && apt-get install -y -q --no-install-recommends "
                "postgresql-15 && rm -rf /var/lib/apt/lists/*\n"
                "RUN pip install 'moto[server]>=5.0,<6'\n")
    docker("build", "-q", "-t", SERVICES_IMAGE, "-", stdin=services.encode(), timeout=900)
    docker("image", "prune", "-f", timeout=300)  # what earlier builds left untagged


class Hosts:
    """Containers on two networks: ``front`` (clients and the APIs) and ``back`` (the APIs,
    the services, monitors and workers). Cutting a host from ``back`` cuts it from the
    store while clients still reach it."""

    def __init__(self, logs: Path) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.logs = logs
        self.names: list[str] = []
        self.networks = {n: f"vm-{self.run}-{n}" for n in ("front", "back")}
        for network in self.networks.values():
            docker("network", "create", "--label", f"{LABEL}={self.run}", network)

    def container(self, name: str) -> str:
        return f"vm-{self.run}-{name}"

    def start(self, name: str, command: list[str], *, image: str = IMAGE,
              env: dict[str, str] | None = None, front: bool = False, user: str | None = None,
              mounts: tuple[str, ...] = ()) -> None:
        """Start host ``name`` (its hostname and its name on the networks) running
        ``command``."""
        args = ["create", "--name", self.container(name), "--hostname", name,
                "--label", f"{LABEL}={self.run}", "--network", self.networks["back"],
                "--network-alias", name, "--stop-timeout", "20"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        for mount in mounts:
            args += ["-v", mount]
        if user:
            args += ["--user", user]
        docker(*args, image, *command)
        if front:
            docker("network", "connect", "--alias", name, self.networks["front"],
                   self.container(name))
        docker("start", self.container(name))
        self.names.append(name)

    def one_shot(self, name: str, command: list[str], env: dict[str, str],
                 timeout: float = 600) -> str:
        """Run ``command`` as host ``name`` to its end; its output (raises if it failed)."""
        args = ["run", "--name", self.container(name), "--hostname", name,
                "--label", f"{LABEL}={self.run}", "--network", self.networks["back"]]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        try:
            return docker(*args, IMAGE, *command, timeout=timeout)
        finally:
            self.names.append(name)

    def ip(self, name: str, network: str = "front") -> str:
        """Host ``name``'s address on ``network``."""
        found = json.loads(docker("inspect", self.container(name)))[0]
        return found["NetworkSettings"]["Networks"][self.networks[network]]["IPAddress"]

    def pid(self, name: str) -> int:
        """The host's first process, as the machine sees it (for ``nsenter``)."""
        return int(docker("inspect", "-f", "{{.State.Pid}}", self.container(name)).strip())

    def cut(self, name: str, network: str = "back") -> None:
        """Pull host ``name``'s cable to ``network``."""
        docker("network", "disconnect", "--force", self.networks[network], self.container(name))

    def mend(self, name: str, network: str = "back") -> None:
        """Plug host ``name`` back into ``network``."""
        docker("network", "connect", "--alias", name, self.networks[network],
               self.container(name))

    def exec(self, name: str, *command: str, user: str | None = None,
             timeout: float = 60) -> str:
        """Run ``command`` on host ``name``."""
        return docker("exec", *(["--user", user] if user else []), self.container(name),
                      *command, timeout=timeout)

    def in_netns(self, name: str, *command: str) -> None:
        """Run a machine program (iptables) inside host ``name``'s network namespace."""
        subprocess.run(["nsenter", "-t", str(self.pid(name)), "-n", *command], check=True,
                       capture_output=True, timeout=30)

    def signal(self, name: str, signal: str) -> None:
        docker("kill", "--signal", signal, self.container(name))

    def running(self, name: str) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.container(name),
                      check=False).strip() == "true"

    def save_logs(self) -> None:
        """Each host's output into :attr:`logs`."""
        for name in self.names:
            done = subprocess.run(["docker", "logs", self.container(name)], capture_output=True,
                                  timeout=60)
            (self.logs / f"{name}.log").write_bytes(done.stdout + done.stderr)

    def tail(self, name: str, chars: int = 3000) -> str:
        done = subprocess.run(["docker", "logs", self.container(name)], capture_output=True,
                              timeout=60)
        return (done.stdout + done.stderr).decode(errors="replace")[-chars:]

    def close(self) -> None:
        """Save the logs, then remove every container and both networks."""
        try:
            self.save_logs()
        finally:
            containers = docker("ps", "-aq", "--filter", f"label={LABEL}={self.run}").split()
            if containers:
                docker("rm", "-f", "-v", *containers, timeout=120, check=False)
            for network in self.networks.values():
                docker("network", "rm", network, check=False)


def scratch() -> Path:
    """A folder for the base image's root file system (large: not in pytest's tmp_path)."""
    return Path(tempfile.mkdtemp(prefix="vidmon-hosts-"))
