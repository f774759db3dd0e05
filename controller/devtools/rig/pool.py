"""The sandbox for outbound mode (worker pools), as the tests and benchmarks use it.

:func:`start_pool_sandbox` starts a sandboxed Asterisk of its own whose
ari.conf and websocket_client.conf send ``Stasis()`` of several apps to
per-call websockets (``type=outbound_websocket``, ``per_call_config``; for
``voicebot``, the repository's own ``asterisk/pool/`` files):

=============== ================================= =======================
app             websocket_client.conf uri         used by
=============== ================================= =======================
``voicebot``    ``ws://127.0.0.1:DIRECT``         one controller, or ``--workers N``
``voicebot-tls`` ``wss://127.0.0.1:TLS`` (CA: ours) the TLS test
``voicebot-lb`` ``ws://127.0.0.1:LB``             HAProxy in front of two controllers
=============== ================================= =======================

The dialplan is the repository's: ``Gosub(voicebot,s,1(...))`` runs
``Stasis(${VOICEBOT_APP})``, so a test picks the app by setting that global
(:meth:`PoolAsterisk.use_app`). ari.conf ``#tryinclude``s ari_pool.conf, so
only this sandbox (and docker-compose.pool.yml) is in outbound mode; the
shared one stays inbound.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from asterisk.sandbox import CONF_DIR
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import ensure_tools
from controller.devtools.rig.sandbox import Sandbox, start_sandbox

PASSWORD = "voicebot-secret"  # asterisk/ari.conf's sandbox account


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), as ``(cert, key)``."""
    cert, key = directory / "listen-cert.pem", directory / "listen-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def outbound_conf(
    apps: dict[str, str], *, ca_file: str = "", password: str = PASSWORD
) -> dict[str, str]:
    """ari_pool.conf and websocket_client.conf for the per-call websocket of each app.

    App ``voicebot`` gets the repository's own ``asterisk/pool`` files (what
    docker-compose.pool.yml mounts), only their ``uri`` changed; other apps get
    sections made the same way. ari.conf ``#tryinclude``s ari_pool.conf.
    """
    pool_dir = CONF_DIR / "pool"
    ari = [(pool_dir / "ari_pool.conf").read_text()]
    clients = [(pool_dir / "websocket_client.conf").read_text()]
    for app, uri in apps.items():
        if app == "voicebot":
            clients[0] = re.sub(r"(?m)^uri=\S+", f"uri={uri}", clients[0])
            clients[0] = re.sub(r"(?m)^password=\S+", f"password={password}", clients[0])
            continue
        name = f"pool-{app}"
        ari.append(
            f"\n[{name}]\ntype=outbound_websocket\nwebsocket_client_id={name}\n"
            f"apps={app}\nlocal_ari_user=voicebot\n"
        )
        client = (
            f"\n[{name}]\ntype=websocket_client\nconnection_type=per_call_config\n"
            f"uri={uri}\nprotocols=ari\nusername=voicebot\npassword={password}\n"
            "connection_timeout=500\nreconnect_interval=250\nreconnect_attempts=4\n"
        )
        if uri.startswith("wss:"):
            client += f"tls_enabled=yes\nca_list_file={ca_file}\nverify_server_cert=yes\n"
            client += "verify_server_hostname=yes\n"
        clients.append(client)
    return {"ari_pool.conf": "".join(ari), "websocket_client.conf": "".join(clients)}


@dataclass
class PoolAsterisk:
    """The pool tests' Asterisk and the ports its per-call websockets go to."""

    box: Sandbox
    direct_port: int
    tls_port: int
    lb_port: int
    cert: Path
    key: Path

    async def use_app(self, ari: AriClient, app: str) -> None:
        """Send the dialplan's ``Stasis()`` to ``app`` (the VOICEBOT_APP global)."""
        await ari.set_global("VOICEBOT_APP", app)


def start_pool_sandbox(state: Path) -> PoolAsterisk:
    """Start the pool tests' own sandbox (first free port set of :data:`PORT_SETS`)."""
    shared = state / "spool" / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    cert, key = make_cert(shared)
    direct, tls, lb = free_port(), free_port(), free_port()
    apps = {
        "voicebot": f"ws://127.0.0.1:{direct}/ari",
        "voicebot-tls": f"wss://127.0.0.1:{tls}/ari",
        "voicebot-lb": f"ws://127.0.0.1:{lb}/ari",
    }
    # The CA file as Asterisk sees it (the shared dir is bound inside).
    conf = outbound_conf(apps, ca_file=f"/var/spool/asterisk/shared/{cert.name}")
    box = start_sandbox(state, conf=conf)
    return PoolAsterisk(box, direct, tls, lb, cert, key)


def haproxy_config(listen: int, servers: dict[str, int]) -> str:
    """The repository's ``asterisk/pool/haproxy.cfg`` with these ports and servers.

    TCP mode, ``leastconn``, ``/healthz`` on the port that carries the calls,
    ``redispatch``: see the file.
    """
    text = (CONF_DIR / "pool" / "haproxy.cfg").read_text()
    text = re.sub(r"(?m)^    bind 127\.0\.0\.1:\d+$", f"    bind 127.0.0.1:{listen}", text)
    text = re.sub(r"(?m)^    server .*\n", "", text)
    lines = "".join(f"    server {name} 127.0.0.1:{port}\n" for name, port in servers.items())
    return text.rstrip("\n") + "\n" + lines


def haproxy_binary() -> str:
    """HAProxy (Debian's package, installed with apt-get when missing and root)."""
    for candidate in ("/usr/sbin/haproxy", shutil.which("haproxy")):
        if candidate and Path(candidate).exists():
            return candidate
    ensure_tools("haproxy")
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise RuntimeError("haproxy is not installed and could not be installed")
    return found
