"""Which Kafka cluster the project's clients use: the one `$KAFKA_BOOTSTRAP_SERVERS` names, else
the project's own local broker if it runs, else the default address.

Above both `admin` (any cluster) and `broker` (the local one), so neither imports the other back.
"""

from __future__ import annotations

import os
import re

from custseg.errors import ConfigError
from custseg.kafka.admin import DEFAULT_BOOTSTRAP, ENV_BOOTSTRAP
from custseg.kafka.broker import running_local_bootstrap


def bootstrap_servers() -> str:
    """The cluster to use: `$KAFKA_BOOTSTRAP_SERVERS`, else the project's running local broker
    (whatever port `custseg kafka up` gave it), else 127.0.0.1:9092."""
    chosen = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if chosen:
        return checked_bootstrap(chosen)
    return running_local_bootstrap() or DEFAULT_BOOTSTRAP


# host:port, the host a name, an IPv4 address or a bracketed IPv6 one.
_SERVER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")


def checked_bootstrap(servers: str) -> str:
    """`servers` if it is a comma-separated list of host:port; ConfigError (one line) otherwise,
    rather than a ValueError from deep inside the Kafka client."""
    for server in servers.split(","):
        match = _SERVER.fullmatch(server.strip())
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise ConfigError(
                f"{ENV_BOOTSTRAP}: expected host:port[,host:port...], got {servers!r}"
            )
    return servers
