"""The embedded Triton server: the real `tritonserver` from the nvidia-pytriton wheel.

`LocalTriton` starts one server on loopback with free ports and explicit model control,
waits until it is ready and stops it with its whole process group (Python-backend stubs
included). A watchdog process and the parent-death signal make sure the server does not
outlive the process that started it, even when that process is SIGKILLed.

How the bundled server is made to run (see docs/server.md):
1. a backend directory of our own, cached under ~/.cache/triton-ops: a copy of the wheel's
   backends/python plus the stub built for the running Python as
   python/triton_python_backend_stub;
2. LD_LIBRARY_PATH = the wheel's nvidia_pytriton.libs + the folder holding libpython3.X.so;
3. the folder of sys.executable FIRST on PATH: the stub runs the models with the `python3`
   it finds there (this virtualenv, with numpy<2), not with PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from triton_ops.server import _watchdog
from triton_ops.server.ports import check_port

DEFAULT_CACHE_DIR = Path(os.environ.get("TRITON_OPS_CACHE_DIR", "~/.cache/triton-ops")).expanduser()
_STUB_NAME = "triton_python_backend_stub"
_PORT_ATTEMPTS = 4  # a free port can be taken between picking it and the server binding it
# Error lines every CPU-only start logs; they say nothing about why a start failed.
_LOG_NOISE = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML",
              "DCGM unable to start", "Unable to get CUDA device count")
_ADDRESS_IN_USE = ("address already in use", "failed to bind", "address in use")


class ServerError(RuntimeError):
    """The embedded server could not be set up, did not start, or died."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the bundled Triton are."""

    binary: Path
    python_backend: Path  # the wheel's backends/python (libtriton_python.so + utils)
    stubs_dir: Path  # python_backend_stubs/<major.minor>/triton_python_backend_stub
    libs_dir: Path  # shared libraries the binary links against (nvidia_pytriton.libs)

    @classmethod
    def discover(cls) -> TritonInstall:
        """Find the tritonserver of the installed nvidia-pytriton wheel."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                "the nvidia-pytriton wheel is not installed in this Python "
                f"({sys.executable}); install it with `pip install nvidia-pytriton==0.7.0` "
                "or pass --url to use a running Triton server"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        root = package / "tritonserver"
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stubs_dir=root / "python_backend_stubs",
            libs_dir=package.parent / "nvidia_pytriton.libs",
        )
        if not install.binary.is_file():
            raise ServerError(
                f"the nvidia-pytriton wheel has no tritonserver binary at {install.binary}; "
                "reinstall it (`pip install --force-reinstall nvidia-pytriton==0.7.0`)"
            )
        return install

    def stub_for(self, version: tuple[int, int] | None = None) -> Path:
        """The Python-backend stub built for `version` (default: the running Python)."""
        major, minor = version or sys.version_info[:2]
        stub = self.stubs_dir / f"{major}.{minor}" / _STUB_NAME
        if not stub.is_file():
            available = sorted(
                p.name for p in self.stubs_dir.glob("*") if (p / _STUB_NAME).is_file()
            )
            raise ServerError(
                f"no Python-backend stub for Python {major}.{minor}: {stub} does not exist "
                f"(stubs found for: {', '.join(available) or 'none'}). Run triton-ops with "
                "one of those Python versions, or reinstall nvidia-pytriton"
            )
        return stub


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def prepare_backend_dir(install: TritonInstall, cache_dir: Path | None = None) -> Path:
    """A backend directory holding the Python backend and the stub for this Python.

    Built once per (wheel files, Python version) under `cache_dir` and reused; it is built
    in a temporary folder and renamed into place so concurrent servers never see half of it.
    """
    stub = install.stub_for()
    library = install.python_backend / "libtriton_python.so"
    if not library.is_file():
        raise ServerError(
            f"the Python backend is missing from the nvidia-pytriton wheel ({library}); "
            "reinstall nvidia-pytriton"
        )
    key = hashlib.sha256(
        "|".join([_file_key(stub), _file_key(library), sys.version]).encode()
    ).hexdigest()[:16]
    base = (cache_dir or DEFAULT_CACHE_DIR) / "backends"
    target = base / f"py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    if (target / "python" / _STUB_NAME).is_file() and (target / "python" / library.name).is_file():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
        shutil.copytree(
            install.python_backend, staging / "python",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        shutil.copy2(stub, staging / "python" / _STUB_NAME)
        os.chmod(staging / "python" / _STUB_NAME, 0o755)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process won the race (or an incomplete old copy is in the way).
            if not (target / "python" / _STUB_NAME).is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(staging, target)
            else:
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ServerError(
            f"cannot build the Triton backend directory under {base}: {exc}. "
            "Set TRITON_OPS_CACHE_DIR to a writable folder"
        ) from exc
    return target


def server_environment(
    install: TritonInstall, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for tritonserver: its libraries, libpython, and this Python first on PATH."""
    env = dict(os.environ if base is None else base)
    libdirs = [str(install.libs_dir)]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        libdirs.append(str(libdir))
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs)
    # The stub runs `python3` from PATH: make it this interpreter's folder (this venv).
    bindir = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *rest])
    env.pop("PYTHONHOME", None)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that asks the kernel to SIGTERM the child when its parent dies.

    SIGTERM, not SIGKILL, so the server still unloads its models and removes its shared
    memory. The kernel ties this signal to the parent THREAD, so it is only used when the
    server is started from the main thread; the watchdog covers every case.
    """
    main = threading.current_thread() is threading.main_thread()
    if not sys.platform.startswith("linux") or not main:
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class LocalTriton:
    """One real tritonserver on 127.0.0.1, for tests, `serve`, `probe` and `tune`.

    Use as a context manager, or call start() and stop(). `grpc_url` and `http_url` are in
    the "host:port" form tritonclient expects; `metrics_url` is a full URL.
    """

    def __init__(
        self,
        repository: Path | str,
        *,
        models: Sequence[str] = (),
        log_path: Path | None = None,
        startup_timeout_s: float = 60.0,
        extra_args: Sequence[str] = (),
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        install: TritonInstall | None = None,
        cache_dir: Path | None = None,
        exit_timeout_s: int = 5,
        keep_log: bool = True,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.models = list(models)
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args)
        self.exit_timeout_s = exit_timeout_s
        for name, port in (("grpc_port", grpc_port), ("http_port", http_port),
                           ("metrics_port", metrics_port)):
            if port is not None:
                check_port(port, name)  # ValueError before anything is started
        self._fixed_ports = (grpc_port, http_port, metrics_port)
        self._install = install
        self._cache_dir = cache_dir
        # With keep_log=False, a log this object created itself is deleted after a clean stop
        # (kept whenever the server failed, since the error points at it).
        self.keep_log = keep_log
        self._own_log_dir: Path | None = None
        if log_path is None:
            self._own_log_dir = Path(tempfile.mkdtemp(prefix="triton-ops-server-"))
            log_path = self._own_log_dir / "tritonserver.log"
        self.log_path = Path(log_path)
        self.grpc_port = 0
        self.http_port = 0
        self.metrics_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_fd: int | None = None
        self._start_time: str | None = None
        self._workdir: Path | None = None

    # ---- endpoints -----------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- lifecycle -----------------------------------------------------------------------
    def command(self, backend_dir: Path) -> list[str]:
        install = self._install or TritonInstall.discover()
        args = [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--reuse-http-port=false",
            "--reuse-grpc-port=false",
            "--allow-metrics=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--log-info=true",
        ]
        args += [f"--load-model={m}" for m in self.models]
        return args + self.extra_args

    def start(self) -> LocalTriton:
        """Start the server and wait until it (and every model in `models`) is ready."""
        if self.running:
            return self
        if not self.repository.is_dir():
            raise ServerError(
                f"model repository {self.repository} does not exist or is not a folder"
            )
        install = self._install or TritonInstall.discover()
        self._install = install
        backend_dir = prepare_backend_dir(install, self._cache_dir)
        fixed = any(p is not None for p in self._fixed_ports)
        for port in self._fixed_ports:
            if port is not None and port_in_use(port):
                raise ServerError(
                    f"port {port} on 127.0.0.1 is already in use by another process; "
                    "choose another port or leave it out to pick a free one"
                )
        attempts = 1 if fixed else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._pick_ports()
            try:
                self._launch(backend_dir)
                self._wait_ready()
                return self
            except ServerError as exc:
                in_use = any(s in str(exc).lower() for s in _ADDRESS_IN_USE)
                self.stop()
                if not in_use or attempt == attempts:
                    if in_use and attempts > 1:
                        raise ServerError(
                            f"{exc}\n(a port was taken by another process {attempts} times; "
                            "is something binding many ports on 127.0.0.1?)"
                        ) from None
                    raise
            except BaseException:  # Ctrl-C while waiting: never leave the server behind
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _pick_ports(self) -> None:
        chosen: list[int] = []
        for fixed in self._fixed_ports:
            port = fixed
            while port is None or port in chosen:
                port = free_port()
            chosen.append(port)
        self.grpc_port, self.http_port, self.metrics_port = chosen

    def _launch(self, backend_dir: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log_file = log_file
        env = server_environment(self._install or TritonInstall.discover())
        # The Python-backend stub puts its working folder first on sys.path: in the model
        # repository, a module there (numpy.py, triton_python_backend_utils.py, a folder
        # named like a version) would be imported instead of the real one by every model.
        self._workdir = Path(tempfile.mkdtemp(prefix="triton-ops-cwd-"))
        try:
            self._proc = subprocess.Popen(
                self.command(backend_dir),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self._workdir),
                start_new_session=True,  # its own process group: stop() kills stubs too
                preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509 - only prctl + getppid
            )
        except OSError as exc:
            raise ServerError(f"cannot run {self.command(backend_dir)[0]}: {exc}") from exc
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        assert self._proc is not None
        start = _watchdog.proc_start_time(self._proc.pid)
        self._start_time = start
        if start is None:  # already gone: _wait_ready reports it with the log
            return
        read_fd, write_fd = os.pipe()  # both non-inheritable; read end passed explicitly
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", _watchdog.__file__, str(read_fd),
                 str(self._proc.pid), start, str(self.exit_timeout_s + 5)],
                pass_fds=(read_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # survives a kill of the starter's process group
            )
        finally:
            os.close(read_fd)
        self._watchdog_fd = write_fd

    def _release_watchdog(self) -> None:
        if self._watchdog_fd is not None:
            try:
                os.write(self._watchdog_fd, b"q")
            except OSError:
                pass
            os.close(self._watchdog_fd)
            self._watchdog_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        # Loopback never goes through an http_proxy the environment may name.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            self.check_alive(during="startup")
            try:
                with opener.open(url, timeout=1.0) as response:
                    if response.status == 200 and self._grpc_accepts():
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"tritonserver did not become ready within {self.startup_timeout_s:.0f} s "
                    f"(models: {', '.join(self.models) or 'none'}).\n{self._log_report()}"
                )
            time.sleep(0.1)

    def _grpc_accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1.0):
                return True
        except OSError:
            return False

    def check_alive(self, during: str = "") -> None:
        """Raise ServerError with the end of the server log if the process has exited."""
        if self._proc is None:
            raise ServerError("the Triton server is not started")
        code = self._proc.poll()
        if code is None:
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        when = f" during {during}" if during else ""
        raise ServerError(
            f"tritonserver {how}{when} (models: {', '.join(self.models) or 'none'}).\n"
            f"{self._log_report()}"
        )

    def log_errors(self, limit: int = 20) -> list[str]:
        """The error lines of the server log (glog "E" lines, "error:", bad options)."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return []
        errors = []
        for line in text.splitlines():
            stripped = line.strip()
            is_error = (
                (len(stripped) > 1 and stripped[0] == "E" and stripped[1].isdigit())
                or stripped.lower().startswith("error")
                or "unrecognized option" in stripped
            )
            if is_error and not any(noise in stripped for noise in _LOG_NOISE):
                errors.append(stripped)
        return errors[-limit:]

    def _log_report(self) -> str:
        errors = self.log_errors()
        report = ""
        if errors:
            report = "Errors in the server log:\n" + "\n".join(f"  {e}" for e in errors) + "\n"
        return report + f"Last lines of {self.log_path}:\n{self.log_tail(20)}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                tail = deque(f, maxlen=lines)
        except OSError:
            return "(no server log)"
        return b"".join(tail).decode("utf-8", "replace").rstrip()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after `grace_s` seconds."""
        proc = self._proc
        if proc is not None:
            # start_new_session: the server leads its own group, its stubs are in it
            _watchdog.stop_group(proc.pid, self._start_time, grace_s)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # unkillable (D state): do not hang forever
                pass
            self._proc = None
            clean = proc.returncode == 0
        else:
            clean = False
        self._release_watchdog()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        if clean and not self.keep_log and self._own_log_dir is not None:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, grpc {self.grpc_url}" if self.running else "stopped"
        return f"LocalTriton({str(self.repository)!r}, {state})"

