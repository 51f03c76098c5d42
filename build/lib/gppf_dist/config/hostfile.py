"""DeepSpeed hostfiles (`<host> slots=<n>` per line): the hosts and world size of
launcher=deepspeed, read once by validation and once by the launch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gppf_dist.config.schema import LauncherSection

_LINE = re.compile(r"^(?P<host>\S+)(?:\s+slots=(?P<slots>\d+))?\s*$")


@dataclass(frozen=True)
class Host:
    name: str
    slots: int


def read_hostfile(path: Path) -> list[Host]:
    """`<host> slots=<n>` per line; `#` comments and blank lines ignored. Errors name the file
    and the line."""
    if not path.is_file():
        raise ValueError(f"`launcher.hostfile`={str(path)!r} does not exist")
    hosts: list[Host] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None or match["slots"] is None or int(match["slots"]) < 1:
            raise ValueError(
                f"`launcher.hostfile`={str(path)!r} line {number}: {raw.strip()!r} is not "
                "'<hostname> slots=<n>' with n >= 1"
            )
        if any(h.name == match["host"] for h in hosts):
            raise ValueError(
                f"`launcher.hostfile`={str(path)!r} line {number}: host {match['host']!r} twice"
            )
        hosts.append(Host(match["host"], int(match["slots"])))
    if not hosts:
        raise ValueError(f"`launcher.hostfile`={str(path)!r} lists no hosts")
    return hosts


def planned_hosts(launcher: LauncherSection) -> list[Host]:
    """The hosts the launch will use: the hostfile's, or this machine with `nproc` slots."""
    if launcher.hostfile is None:
        return [Host("localhost", launcher.nproc)]
    return read_hostfile(Path(launcher.hostfile))
