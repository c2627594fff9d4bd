"""Where a Channel may deliver (SPEC §2 Channel; the model is written down in docs/security.md).

A Channel names a target the daemon writes to with its own privileges, so what a routine file may
point at is limited:

- `file`: a path under the delivery directory (`delivery.file_root` in the daemon config, default
  `<state root>/deliveries`). A relative path is relative to it, an absolute one must lie inside it.
  No `..`, no kernel or device filesystems; at write time every component is opened without
  following symlinks, and only a regular file with a single link is appended to.
- `webhook`: `http`/`https` only, no credentials in the URL (use a header with `{env: NAME}`), no
  CR/LF/NUL in header names or values. Unspecified, multicast, reserved and cloud-metadata addresses
  are always refused; other link-local addresses (169.254.0.0/16, fe80::/10) unless the daemon config
  sets `delivery.allow_link_local_targets`. Loopback and private addresses are allowed: the daemon
  itself listens on loopback, and internal receivers are the normal case. The check runs at
  validation for what the text shows (a literal address) and again on every address the host name
  resolves to when the delivery connects (see `palyra_ops.egress`), so DNS cannot route around it.

`static_problems` is what `palyra-ops validate` reports (file:line:col); the rest runs at delivery.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import posixpath
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: instance-metadata endpoints of the common clouds: never a delivery target, whatever the config
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})
#: paths no file channel may name, whatever the delivery directory
KERNEL_PREFIXES = ("/proc", "/sys", "/dev")


class TargetRefused(Exception):
    """A delivery target outside the model above; the message says which rule and why."""


# -- addresses -------------------------------------------------------------------------------------


def address_problem(ip: IPAddress, *, allow_link_local: bool) -> str | None:
    """What kind of address forbids a webhook to connect to `ip` ("a multicast address"), or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    if ip in METADATA_ADDRESSES:
        return "a cloud instance-metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        if allow_link_local:
            return None
        return "a link-local address (allowed only with delivery.allow_link_local_targets in the daemon config)"
    if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:
        return "a reserved address"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: the zone is not part of it
    except ValueError:
        return None


# -- static checks ---------------------------------------------------------------------------------


def url_problems(url: str) -> list[str]:
    """What is wrong with a webhook URL as written (the always-refused cases; DNS is not consulted)."""
    if any(c in url for c in "\r\n\0"):
        return ["must not contain CR, LF or NUL"]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return [f"not a valid URL: {exc}"]
    out: list[str] = []
    if parts.scheme.lower() not in ("http", "https"):
        out.append("only http and https URLs are delivered to")
    if parts.username is not None or parts.password is not None:
        out.append("must not carry credentials (user:password@): send them in a header written as {env: NAME}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        out.append("names no host")
        return out
    if port == 0:
        out.append("port 0 is not a destination")
    if host.lower() in METADATA_HOSTS:
        out.append(f"{host} is a cloud instance-metadata host")
    ip = _literal_ip(host)
    if ip is not None:
        # link-local depends on the daemon config, which validation does not see: judged at delivery
        why = address_problem(ip, allow_link_local=True)
        if why:
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            out.append(f"{host} ({mapped}) is {why}" if mapped else f"{ip} is {why}")
    return out


def header_problem(name: str, value: str) -> str | None:
    """A header value that would split the request (CR/LF) or be cut short (NUL)."""
    if any(c in name for c in "\r\n\0:") or not name:
        return "header names must not be empty or contain CR, LF, NUL or ':'"
    if any(c in value for c in "\r\n\0"):
        return "header values must not contain CR, LF or NUL"
    return None


def path_problems(path: str) -> list[str]:
    """What is wrong with a file channel's path whatever the delivery directory."""
    if "\0" in path:
        return ["must not contain NUL"]
    out: list[str] = []
    parts = path.split("/")
    if ".." in parts:
        out.append("must not contain '..': file channels write inside the delivery directory")
    if path.endswith("/") or parts[-1] in ("", "."):
        out.append("must name a file, not a directory")
    norm = posixpath.normpath(path) if path.startswith("/") else ""
    if any(norm == p or norm.startswith(p + "/") for p in KERNEL_PREFIXES):
        out.append(f"{norm} is on a kernel or device filesystem")
    return out


def static_problems(spec: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """(field path under spec, message) for a Channel spec; used by `palyra-ops validate`."""
    out: list[tuple[tuple[str, ...], str]] = []
    kind = spec.get("type")
    if kind == "webhook" and isinstance(spec.get("url"), str):
        out += [(("url",), m) for m in url_problems(spec["url"])]
    if kind == "webhook" and isinstance(spec.get("headers"), dict):
        for name, value in spec["headers"].items():
            why = header_problem(str(name), value if isinstance(value, str) else "")
            if why:
                out.append((("headers", str(name)), why))
    if kind == "file" and isinstance(spec.get("path"), str):
        out += [(("path",), m) for m in path_problems(spec["path"])]
    return out


# -- file deliveries -------------------------------------------------------------------------------


def _relative_to_root(root: Path, path: str) -> list[str]:
    """The components of `path` below `root`; refuses anything that would leave it."""
    problems = path_problems(path)
    if problems:
        raise TargetRefused(f"file {path}: {problems[0]}")
    if path.startswith("/"):
        norm = posixpath.normpath(path)
        for base in dict.fromkeys((posixpath.normpath(str(root)), os.path.realpath(root))):
            if norm.startswith(base.rstrip("/") + "/"):
                return [p for p in norm[len(base.rstrip("/")) + 1:].split("/") if p]
        raise TargetRefused(f"file {path}: outside the delivery directory {root} "
                            "(delivery.file_root in the daemon config)")
    return [p for p in posixpath.normpath(path).split("/") if p and p != "."]


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _open_subdir(fd: int, comp: str, path: str) -> int:
    """The directory `comp` below the directory `fd`, created 0700 when missing; never a symlink."""
    try:
        return os.open(comp, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except FileNotFoundError:
        try:
            os.mkdir(comp, 0o700, dir_fd=fd)
        except FileExistsError:
            pass
        return os.open(comp, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise TargetRefused(f"file {path}: {comp!r} is a symlink or not a directory") from None
        raise


def _open_file(fd: int, name: str, path: str) -> int:
    try:
        return os.open(name, _FILE_FLAGS, 0o600, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TargetRefused(f"file {path}: is a symlink") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise TargetRefused(f"file {path}: not a regular file") from None
        raise


def open_for_append(root: Path, path: str) -> int:
    """An O_APPEND descriptor for `path` under `root`, opened one component at a time.

    Each directory below the root is opened with O_NOFOLLOW relative to its parent's descriptor (and
    created 0700 when missing), so a symlink anywhere under the root — planted before or swapped in
    during the walk — makes the open fail instead of leading elsewhere. The file itself is opened
    O_NOFOLLOW|O_NONBLOCK (a FIFO cannot block the delivery) and must turn out a regular file with one
    link (a hard link to a file elsewhere is refused). The root itself is the operator's choice and
    may be a symlink.
    """
    parts = _relative_to_root(root, path)
    if not parts:
        raise TargetRefused(f"file {path}: must name a file, not a directory")
    os.makedirs(root, mode=0o700, exist_ok=True)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for comp in parts[:-1]:
            nxt = _open_subdir(fd, comp, path)
            os.close(fd)
            fd = nxt
        out = _open_file(fd, parts[-1], path)
    finally:
        os.close(fd)
    st = os.fstat(out)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(out)
        why = "not a regular file" if not stat.S_ISREG(st.st_mode) else "has more than one hard link"
        raise TargetRefused(f"file {path}: {why}")
    os.set_blocking(out, True)
    return out
