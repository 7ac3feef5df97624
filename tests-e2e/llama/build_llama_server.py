#!/usr/bin/env python3
"""Build llama.cpp's ``llama-server`` from source, once, into a per-user cache.

No model hub and no GitHub are reachable from CI, only PyPI. The llama.cpp source
tree is vendored in the ``llama-cpp-python`` sdist, so we fetch that with
``pip download`` and build just the ``llama-server`` target with cmake.

The binary lands in ``$REMOTELLM_LLAMA_CACHE`` (default ``~/.cache/remotellm/llama``)
under a name keyed by the llama-cpp-python version and CPU tuning, so a second run
is a file-exists check. Progress goes to stderr; the binary's path is the only
thing printed on stdout, so callers can use ``$(python build_llama_server.py)``.

Stdlib only: this runs before any test dependency is installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# Only used when the machine has no usable cmake; same versions the recipe was proven with.
CMAKE_PIN = "cmake==4.3.0"
NINJA_PIN = "ninja==1.13.0"
MIN_CMAKE = (3, 14)  # llama.cpp's cmake_minimum_required
BUILD_TIMEOUT_S = 60 * 60  # a 2-core machine needs ~6 min; anything near an hour is hung
PROGRESS_EVERY_S = 20.0

# Why each flag: a static, loopback-only server with nothing downloaded at build time.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary we can copy out of the build tree
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",  # the server lives under tools/
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",  # the web UI needs npm ...
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # ... or a download from the HF hub
    "-DLLAMA_OPENSSL=OFF",  # we only ever talk plain HTTP on 127.0.0.1
]


def log(msg: str) -> None:
    print(f"[build-llama-server {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    """The build failed; the message holds the tail of the build log."""


def cache_dir() -> Path:
    root = os.environ.get("REMOTELLM_LLAMA_CACHE") or "~/.cache/remotellm/llama"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def native_build() -> bool:
    # -march=native is ~2x faster, but the binary then only runs on this CPU family;
    # set REMOTELLM_LLAMA_NATIVE=0 when the cache is shared between machines.
    return os.environ.get("REMOTELLM_LLAMA_NATIVE", "1") != "0"


def binary_path() -> Path:
    tuning = "native" if native_build() else "generic"
    return cache_dir() / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}-{tuning}"


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise builders (e.g. parallel pytest workers) so the work happens once."""
    with open(cache_dir() / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_quiet(cmd: list[str], log_file: Path) -> None:
    """Run a short setup command, appending its output to the build log."""
    with open(log_file, "ab") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise BuildError(f"{cmd[0]} exited {rc}\n{log_tail(log_file)}")


def log_tail(log_file: Path, lines: int = 40) -> str:
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def fetch_sdist(work: Path, log_file: Path) -> Path:
    """Download (once) and unpack the sdist; return the vendored llama.cpp tree."""
    sdist = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not sdist.exists():
        log(f"pip download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} sdist (~77 MB)")
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        cmd = [*pip, "download", "--no-deps", "--no-binary", ":all:", "-d", str(work)]
        cmd.append(f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}")
        run_quiet(cmd, log_file)
    src_root = work / "src"
    shutil.rmtree(src_root, ignore_errors=True)  # a half-extracted tree from a killed run
    log("unpacking the sdist")
    with tarfile.open(sdist) as tar:
        # the "data" filter refuses absolute paths and links out of the tree (3.11.4+)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(src_root, filter="data")
        else:
            tar.extractall(src_root)
    return src_root / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"


def cmake_version(cmake: str) -> tuple[int, int]:
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def find_build_tools(work: Path, log_file: Path) -> tuple[str, list[str]]:
    """Return (cmake executable, generator args); pip-install cmake/ninja only if needed."""
    cmake = shutil.which("cmake")
    ninja = shutil.which("ninja")
    if cmake is None or cmake_version(cmake) < MIN_CMAKE:
        venv = work / "tools-venv"
        log(f"no usable cmake on PATH: installing {CMAKE_PIN} {NINJA_PIN} into {venv}")
        run_quiet([sys.executable, "-m", "venv", str(venv)], log_file)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        run_quiet([*pip, "install", "-q", CMAKE_PIN, NINJA_PIN], log_file)
        cmake, ninja = str(venv / "bin" / "cmake"), str(venv / "bin" / "ninja")
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    return cmake, generator


def last_progress_line(log_file: Path) -> str:
    """The newest "[n/m]" (ninja) or "[ nn%]" (make) line, for a heartbeat on stderr."""
    with open(log_file, "rb") as fh:
        fh.seek(max(0, log_file.stat().st_size - 4096))
        lines = fh.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        if re.match(r"\s*\[\s*\d+(/\d+|%)\]", line):
            return line.strip()[:100]
    return "(configuring)"


def run_build(cmd: list[str], log_file: Path, deadline: float) -> None:
    """Run a long build step, printing a progress line now and then, bounded by deadline."""
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BuildError(f"build timed out after {BUILD_TIMEOUT_S} s\n{log_tail(log_file)}")
        if time.monotonic() > next_report:
            log(f"  {last_progress_line(log_file)}")
            next_report += PROGRESS_EVERY_S
        time.sleep(1.0)
    if proc.returncode != 0:
        raise BuildError(f"{Path(cmd[0]).name} exited {proc.returncode}\n{log_tail(log_file)}")


def compile_server(
    src: Path, build: Path, log_file: Path, cmake: str, generator: list[str]
) -> Path:
    jobs = str(os.cpu_count() or 2)
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    native = f"-DGGML_NATIVE={'ON' if native_build() else 'OFF'}"
    log(
        f"cmake configure + build of llama-server ({jobs} jobs, ~6 min on 2 cores); log: {log_file}"
    )
    run_build(
        [cmake, "-S", str(src), "-B", str(build), *generator, *CMAKE_FLAGS, native],
        log_file,
        deadline,
    )
    run_build(
        [cmake, "--build", str(build), "--target", "llama-server", "-j", jobs], log_file, deadline
    )
    return build / "bin" / "llama-server"


def build() -> Path:
    """Make sure the cached llama-server exists; build it if not. Returns its path."""
    target = binary_path()
    if target.exists():
        return target
    with locked(target.name):
        if target.exists():  # another process built it while we waited for the lock
            return target
        started = time.monotonic()
        work = cache_dir() / f"work-{LLAMA_CPP_PYTHON_VERSION}"
        work.mkdir(exist_ok=True)
        log_file = cache_dir() / f"{target.name}.build.log"
        log_file.write_text("")
        src = fetch_sdist(work, log_file)
        cmake, generator = find_build_tools(work, log_file)
        built = compile_server(src, work / "build", log_file, cmake, generator)
        # Copy then rename, so a reader never sees a half-written binary.
        with tempfile.NamedTemporaryFile(dir=cache_dir(), delete=False) as tmp:
            shutil.copyfile(built, tmp.name)
        os.chmod(tmp.name, 0o755)
        os.replace(tmp.name, target)
        # Keep the sdist (a rebuild skips the download); drop the unpacked source and objects.
        shutil.rmtree(work / "src", ignore_errors=True)
        shutil.rmtree(work / "build", ignore_errors=True)
        log(f"built {target} in {time.monotonic() - started:.0f} s")
    return target


def main() -> int:
    try:
        path = build()
    except BuildError as exc:
        log(f"FAILED: {exc}")
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
