"""Build the Dockerfile with podman on a machine that cannot reach an image registry, and start
the built image's own commands without a container runtime.

    python tools/local_image.py base            # the local base image (made once, then cached)
    python tools/local_image.py build [--tag T] # the service's image on that base
    python tools/local_image.py run [--tag T] -- python manage.py check --deploy

The base: Debian bookworm from ``debootstrap`` plus Debian's own Python 3.11, imported into
podman and passed to the Dockerfile as ``PYTHON_IMAGE``. Its root filesystem is kept as a tar
file in the cache directory (``SCHOOL_PAYMENTS_CACHE_DIR``, else ``$XDG_CACHE_HOME/school-payments``,
else ``~/.cache/school-payments``), so a new podman store imports it in seconds instead of
bootstrapping again. ``--refresh`` makes it anew (Debian's security updates).

The build runs with ``--isolation chroot`` (no OCI runtime needed) and gives pip the host's CA
bundle as the build secret ``ca-bundle`` (``BUILD_CA_BUNDLE``, default the system bundle), for
machines behind a TLS-inspecting proxy.

Running: containers cannot run here, so ``run`` creates a container without starting it, mounts
its root filesystem and starts the command in a chroot of it, as the image's user, in its
working directory, with the image's environment (plus the caller's overrides). The process
shares the host's network, so it reaches the host's PostgreSQL and Redis on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TAG = "localhost/school-payments:local"
SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Debian's Python 3.11 as `python3`, with venv (ensurepip's wheels) and the CA certificates;
# passwd (groupadd, useradd) is part of every Debian base.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")


class ToolMissing(RuntimeError):
    """podman or debootstrap is not installed: the caller may skip what needs them."""


def cache_dir() -> Path:
    configured = os.environ.get("SCHOOL_PAYMENTS_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "school-payments"


def _recipe_key() -> str:
    recipe = json.dumps([SUITE, DEBIAN_MIRROR, BASE_PACKAGES, BASE_ENV])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_image_ref() -> str:
    return f"localhost/school-payments-base:{SUITE}-python3.11-{_recipe_key()}"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise ToolMissing(f"{tool} is not installed (Debian package {tool})")
    return path


def _podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_require("podman"), *args], check=check, capture_output=capture, text=True
    )


def _image_exists(ref: str) -> bool:
    return _podman("image", "exists", ref, check=False).returncode == 0


def _log(message: str) -> None:
    print(f"[local_image] {message}", file=sys.stderr, flush=True)


def _debootstrap_tar(target: Path) -> None:
    """Bootstrap the base's root filesystem and write it to ``target`` as a tar file."""
    _require("debootstrap")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="debootstrap-") as work:
        rootfs = Path(work) / "rootfs"
        started = time.monotonic()
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            capture_output=True,
        )
        # The downloaded packages and lists are not part of an image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = target.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.replace(target)  # never a half-written cache file
        _log(f"debootstrap {SUITE} took {time.monotonic() - started:.0f} s")


def base_image(*, refresh: bool = False) -> str:
    """The local base image's reference, made if missing: from the cached tar file when there
    is one, else by debootstrap (which also fills the cache)."""
    ref = base_image_ref()
    if not refresh and _image_exists(ref):
        return ref
    tar_file = cache_dir() / f"debian-{SUITE}-python3.11-{_recipe_key()}.tar"
    if refresh or not tar_file.is_file():
        _debootstrap_tar(tar_file)
    changes = [f"ENV {item}" for item in BASE_ENV] + ['CMD ["python3"]']
    change_args = [arg for change in changes for arg in ("--change", change)]
    _podman("import", *change_args, str(tar_file), ref)
    _log(f"imported {tar_file} as {ref}")
    return ref


def ca_bundle() -> Path | None:
    configured = os.environ.get("BUILD_CA_BUNDLE")
    candidates = [configured] if configured else ["/etc/ssl/certs/ca-certificates.crt"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass(frozen=True)
class BuildResult:
    ref: str
    image_id: str
    seconds: float
    size_bytes: int


def image_build(*, tag: str = DEFAULT_TAG, python_image: str | None = None, quiet: bool = True) -> BuildResult:
    """Build the repository's Dockerfile with podman (``--isolation chroot``) on
    ``python_image`` (default: the local base). The previous image of ``tag`` is removed when a
    new one replaces it (its layers stay in the build cache)."""
    python_image = python_image or os.environ.get("PYTHON_IMAGE") or base_image()
    previous = _podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    command = [
        "build",
        "--isolation", "chroot",
        "--format", "docker",  # keeps HEALTHCHECK, which the OCI format has no field for
        "--pull=never",  # no registry is reachable: the base must be local
        "--build-arg", f"PYTHON_IMAGE={python_image}",
        "--tag", tag,
        "--file", str(REPO / "Dockerfile"),
    ]  # fmt: skip
    bundle = ca_bundle()
    if bundle:
        command += ["--secret", f"id=ca-bundle,src={bundle}"]
    started = time.monotonic()
    result = _podman(*command, str(REPO), check=False, capture=quiet)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"podman build failed ({result.returncode}):\n{(result.stdout or '')[-6000:]}{result.stderr or ''}")
    inspected = json.loads(_podman("image", "inspect", tag).stdout)[0]
    if previous and previous != inspected["Id"]:
        _podman("rmi", previous, check=False)
    return BuildResult(ref=tag, image_id=inspected["Id"], seconds=seconds, size_bytes=int(inspected["Size"]))


@dataclass(frozen=True)
class ImageConfig:
    env: dict[str, str]
    cmd: list[str]
    user: str
    workdir: str


def image_config(ref: str) -> ImageConfig:
    config = json.loads(_podman("image", "inspect", ref).stdout)[0]["Config"]
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    return ImageConfig(env=env, cmd=list(config.get("Cmd") or []), user=config.get("User") or "0", workdir=config.get("WorkingDir") or "/")


@contextlib.contextmanager
def mounted_container(ref: str) -> Iterator[Path]:
    """A container of ``ref``, created (never started) and mounted: yields its root filesystem,
    writable like a running container's. Unmounted and removed afterwards."""
    name = f"school-payments-run-{os.getpid()}-{int(time.time() * 1000)}"
    _podman("create", "--name", name, ref)
    try:
        rootfs = Path(_podman("mount", name).stdout.strip())
        try:
            yield rootfs
        finally:
            _podman("umount", name, check=False)
    finally:
        _podman("rm", "--force", name, check=False)


def _numeric_user(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"the image's USER must be numeric uid:gid, got {user!r}")
    return int(uid), int(gid or uid)


def start_in_image(
    rootfs: Path,
    config: ImageConfig,
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **popen_kwargs,
) -> subprocess.Popen:
    """Start ``argv`` (default: the image's CMD) in a chroot of ``rootfs`` as the image's user,
    in its working directory, with the image's environment updated by ``env``.

    In a mount namespace of its own (``unshare``), with what a container runtime mounts for
    every container: ``/proc`` and a world-writable tmpfs on ``/dev/shm`` (gunicorn keeps its
    workers' heartbeat files there). They go away with the process. The returned process is
    the command itself (``unshare`` and the entering step exec into it)."""
    uid, gid = _numeric_user(config.user)
    environment = {**config.env, "HOME": config.workdir, **(env or {})}
    command = [
        _require("unshare"), "--mount", "--propagation", "private", "--",
        sys.executable, str(Path(__file__).resolve()), "_enter",
        str(rootfs), config.workdir, str(uid), str(gid), "--", *(argv or config.cmd),
    ]  # fmt: skip
    return subprocess.Popen(command, env=environment, **popen_kwargs)


def _enter(rootfs: str, workdir: str, uid: int, gid: int, argv: list[str]) -> None:
    """Inside the new mount namespace: mount /proc and /dev/shm, chroot, drop to the image's
    user and exec the command (looked up on the image's PATH)."""
    root = Path(rootfs)
    for path in ("proc", "dev/shm"):
        (root / path).mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "shm", str(root / "dev/shm")], check=True)
    os.chroot(root)
    os.chdir(workdir)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.execvp(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_enter"]:  # the second step of start_in_image, not for callers
        rootfs, workdir, uid, gid, _separator, *command = argv[1:]
        _enter(rootfs, workdir, int(uid), int(gid), command)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    base = sub.add_parser("base", help="make (or reuse) the local base image; print its reference")
    base.add_argument("--refresh", action="store_true", help="bootstrap it anew")
    build = sub.add_parser("build", help="build the Dockerfile on the local base; print the image")
    build.add_argument("--tag", default=DEFAULT_TAG)
    run = sub.add_parser("run", help="run a command (default: the image's CMD) from the built image")
    run.add_argument("--tag", default=DEFAULT_TAG)
    run.add_argument("-e", "--env", action="append", default=[], help="NAME=VALUE, repeatable")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.action == "base":
        print(base_image(refresh=args.refresh))
    elif args.action == "build":
        result = image_build(tag=args.tag, quiet=False)
        print(f"{result.ref} {result.image_id[:12]} built in {result.seconds:.0f} s, {result.size_bytes / 1e6:.0f} MB")
    else:
        command = [part for part in args.command if part != "--"] or None
        overrides = dict(item.split("=", 1) for item in args.env)
        with mounted_container(args.tag) as rootfs:
            process = start_in_image(rootfs, image_config(args.tag), command, env=overrides)
            # Stopping this tool stops the command (gunicorn shuts down gracefully on SIGTERM).
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda received, frame: process.send_signal(received))
            return process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
