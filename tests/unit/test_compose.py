"""docker-compose.yml, .env.example and asterisk/*.conf agree with each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from asterisk.sandbox import conf_sections

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
ASTERISK = ROOT / "asterisk"

#: The settings the README documents for .env (controller/config.py aliases).
DOCUMENTED = {
    "ARI_URL",
    "ARI_USER",
    "ARI_PASSWORD",
    "ARI_APP",
    "REALTIME_URL",
    "OPENAI_API_KEY",
    "REALTIME_MODEL",
    "REALTIME_VOICE",
    "REALTIME_AUDIO",
    "MEDIA_ADDRESS",
    "MEDIA_PORTS",
    "AGENT_INSTRUCTIONS",
    "AGENT_GREETING",
    "DATABASE_URL",
    "STORE_TRANSCRIPTS",
    "RECORDS_RETENTION_DAYS",
}
#: Without these the controller cannot reach Asterisk or the model.
REQUIRED = {
    "ARI_URL",
    "ARI_USER",
    "ARI_PASSWORD",
    "ARI_APP",
    "REALTIME_URL",
    "OPENAI_API_KEY",
    "MEDIA_ADDRESS",
    "MEDIA_PORTS",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        assert match, f".env.example:{number}: not NAME=value: {raw!r}"
        name, value = match.groups()
        assert name not in values, f".env.example:{number}: {name} set twice"
        values[name] = value
    return values


def conf(name: str) -> dict[str, dict[str, str]]:
    return dict(conf_sections((ASTERISK / name).read_text()))


def _volumes(service: dict[str, Any], *, named: bool = False) -> list[tuple[str, str]]:
    """A service's bind mounts of repository files (or, with ``named``, its named volumes)."""
    pairs = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"long-form volume not expected: {volume!r}"
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")) != named:
            pairs.append((source, target))
    return pairs


# -- docker-compose.yml -------------------------------------------------------------


def test_services_are_asterisk_and_controller_on_the_host_network(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"asterisk", "controller"}
    for name, service in services.items():
        assert service.get("network_mode") == "host", f"{name}: RTP must not cross Docker's NAT"
        assert "ports" not in service, f"{name}: ports are meaningless with network_mode: host"


def test_asterisk_is_built_from_the_asterisk_directory(compose: dict[str, Any]) -> None:
    build = compose["services"]["asterisk"]["build"]
    context = build if isinstance(build, str) else build["context"]
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context).resolve() == ASTERISK
    text = (ROOT / context / dockerfile).read_text()
    assert re.search(r"^FROM debian:sid", text, re.M)
    assert re.search(r"apt-get .*install .*asterisk", text.replace("\\\n", " "))
    assert "COPY *.conf /etc/asterisk/" in text
    assert "en_US_f_Allison en" in text  # the sounds/en link
    assert '"-f"' in text  # foreground


def test_the_asterisk_image_is_reproducible() -> None:
    """Packages come from one dated Debian snapshot, and Asterisk's version is pinned."""
    text = (ASTERISK / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert re.fullmatch(r"\d{8}T\d{6}Z", args["DEBIAN_SNAPSHOT"]), args
    assert re.fullmatch(r"\d+:22\.[\w.+~-]+", args["ASTERISK_VERSION"]), args  # Asterisk 22
    run = text.replace("\\\n", " ")
    # The only apt source: the base image's own (moving) one is removed first.
    assert "rm -f /etc/apt/sources.list.d/debian.sources" in run
    assert re.search(
        r"deb \[check-valid-until=no\] http://snapshot\.debian\.org/archive/debian/"
        r"\$\{DEBIAN_SNAPSHOT\} sid main\" *> /etc/apt/sources\.list",
        run,
    ), run
    assert '"asterisk=${ASTERISK_VERSION}"' in run
    assert run.index("ARG DEBIAN_SNAPSHOT") < run.index("apt-get")  # in scope for RUN


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for source, target in _volumes(service):
            path = (ROOT / source).resolve()
            assert path.exists(), f"{name}: mounts missing {source}"
            assert ROOT in path.parents or path == ROOT, f"{name}: mounts outside the repo"
            assert target.startswith("/"), f"{name}: relative target {target}"


def test_the_call_records_live_in_a_declared_volume(compose: dict[str, Any]) -> None:
    named = dict(_volumes(compose["services"]["controller"], named=True))
    assert named == {"records": "/var/lib/ari-realtime"}
    assert "records" in compose.get("volumes", {})
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "STATE_DIRECTORY=/var/lib/ari-realtime" in dockerfile  # the default SQLite file


def test_every_asterisk_conf_is_mounted_where_asterisk_reads_it(compose: dict[str, Any]) -> None:
    mounted = dict(_volumes(compose["services"]["asterisk"]))
    confs = sorted(p.name for p in ASTERISK.glob("*.conf"))
    assert confs, "asterisk/ has no .conf files"
    for name in confs:
        source = f"./asterisk/{name}"
        assert source in mounted, f"asterisk/{name} is not mounted"
        assert mounted[source] == f"/etc/asterisk/{name}"


def test_site_additions_are_mounted_and_included(compose: dict[str, Any]) -> None:
    """extensions_local.conf and pjsip_local.conf: mounted (a restart picks up an edit)."""
    mounted = dict(_volumes(compose["services"]["asterisk"]))
    for parent, local in (
        ("extensions.conf", "extensions_local.conf"),
        ("pjsip.conf", "pjsip_local.conf"),
    ):
        assert mounted[f"./asterisk/{local}"] == f"/etc/asterisk/{local}"
        assert re.search(rf"^#tryinclude {local}$", (ASTERISK / parent).read_text(), re.M)
        # Shipped as comments only: an example to adapt, nothing active.
        lines = (ASTERISK / local).read_text().splitlines()
        assert all(not line.strip() or line.startswith(";") for line in lines), local


def test_the_agents_file_is_mounted_where_agents_file_points(compose: dict[str, Any]) -> None:
    from controller.agents import load_agents_file

    controller = compose["services"]["controller"]
    target = controller["environment"]["AGENTS_FILE"]
    mounted = dict(_volumes(controller))
    assert mounted["./agents.toml"] == target
    agents = load_agents_file(ROOT / "agents.toml")
    # Every profile the dialplan asks for exists, so no call falls back to default.
    dialplan = [
        line.split(";", 1)[0] for line in (ASTERISK / "extensions.conf").read_text().splitlines()
    ]
    asked = set(re.findall(r"profile=(\w+)", "\n".join(dialplan)))
    assert asked and asked <= set(agents.profiles), (asked, sorted(agents.profiles))


def test_the_documented_test_call_is_the_same_everywhere(compose: dict[str, Any]) -> None:
    """The compose file's and the README's test call (tests/e2e/test_inbound.py places it)."""
    call = "channel originate Local/100@from-tester application Playback hello-world&silence/10"
    assert call in COMPOSE.read_text()
    assert call in (ROOT / "README.md").read_text()
    dialplan = (ASTERISK / "extensions.conf").read_text()
    from_tester = dialplan.split("\n[from-tester]\n", 1)[1].split("\n[", 1)[0]
    assert "\nexten => 100,1," in from_tester
    assert "load = res_clioriginate.so" in (ASTERISK / "modules.conf").read_text()


def test_controller_runs_the_project_and_reads_dotenv(compose: dict[str, Any]) -> None:
    controller = compose["services"]["controller"]
    env_file = controller["env_file"]
    assert env_file == ".env" or env_file == [".env"]
    depends = controller["depends_on"]
    assert "asterisk" in (depends if isinstance(depends, list) else list(depends))
    command = controller["command"]
    command = command if isinstance(command, str) else " ".join(command)
    assert "ari-realtime run" in command
    # The controller's image is the root Dockerfile, which installs the project.
    assert controller["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY controller" in dockerfile
    assert "pip install" in dockerfile
    assert 'CMD ["ari-realtime", "run"]' in dockerfile


def test_dotenv_is_ignored_by_git() -> None:
    patterns = (ROOT / ".gitignore").read_text().split()
    assert ".env" in patterns or "/.env" in patterns


# -- .env.example ----------------------------------------------------------------------


def test_env_example_names_are_documented_and_complete(env_example: dict[str, str]) -> None:
    unknown = set(env_example) - DOCUMENTED
    assert not unknown, f"undocumented names in .env.example: {sorted(unknown)}"
    missing = REQUIRED - set(env_example)
    assert not missing, f"required names missing from .env.example: {sorted(missing)}"
    assert env_example["OPENAI_API_KEY"] == "", "never ship a key in .env.example"


def test_env_example_matches_the_asterisk_config(env_example: dict[str, str]) -> None:
    http = conf("http.conf")["general"]
    assert http["enabled"] == "yes"
    assert env_example["ARI_URL"] == f"http://{http['bindaddr']}:{http['bindport']}"
    user = conf("ari.conf")[env_example["ARI_USER"]]
    assert user["type"] == "user"
    assert user["password"] == env_example["ARI_PASSWORD"]
    extensions = (ASTERISK / "extensions.conf").read_text()
    assert f"VOICEBOT_APP={env_example['ARI_APP']}" in extensions


def test_media_ports_do_not_overlap_asterisk_rtp(env_example: dict[str, str]) -> None:
    rtp = conf("rtp.conf")["general"]
    first, _, last = env_example["MEDIA_PORTS"].partition("-")
    media = range(int(first), int(last or first) + 1)
    asterisk = range(int(rtp["rtpstart"]), int(rtp["rtpend"]) + 1)
    assert not set(media) & set(asterisk)


def test_env_example_is_valid_settings(
    env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.config import load_settings

    for name in DOCUMENTED:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(ENV_EXAMPLE)
    assert settings.ari_url == env_example["ARI_URL"]
    assert settings.ari_app == env_example["ARI_APP"]
    assert settings.media_ports == env_example["MEDIA_PORTS"]
    assert settings.agent_instructions == env_example["AGENT_INSTRUCTIONS"]


# -- asterisk/*.conf ---------------------------------------------------------------------


def test_modules_conf_is_explicit_and_loads_what_ari_needs() -> None:
    text = (ASTERISK / "modules.conf").read_text()
    assert re.search(r"^autoload\s*=\s*no", text, re.M)
    loads = set(re.findall(r"^load\s*=>?\s*(\S+)", text, re.M))
    needed = {
        "res_ari.so",
        "res_websocket_client.so",  # res_ari needs it since 22.5
        "res_rtp_multicast.so",  # chan_rtp needs it
        "chan_rtp.so",
        "codec_resample.so",
        "app_stasis.so",
        "chan_pjsip.so",
        "res_pjsip_endpoint_identifier_user.so",
    }
    assert needed <= loads, sorted(needed - loads)


def test_rig_endpoints_identify_each_other_by_user() -> None:
    pbx = dict(conf_sections((ASTERISK / "pjsip.conf").read_text()))
    rig = dict(conf_sections((ASTERISK / "pjsip_rig.conf").read_text()))
    # conf_sections keeps the last section of a name; collect endpoints explicitly.
    sections = conf_sections((ASTERISK / "pjsip.conf").read_text())
    sections += conf_sections((ASTERISK / "pjsip_rig.conf").read_text())
    endpoints = {name: v for name, v in sections if v.get("type") == "endpoint"}
    tester, phone = endpoints["tester"], endpoints["phone"]
    assert tester["context"] == "from-tester"
    assert tester["identify_by"] == phone["identify_by"] == "username"
    # Calls from the phone side present "tester", calls from the PBX "phone".
    assert phone["from_user"] == "tester"
    assert tester["from_user"] == "phone"
    for endpoint in (tester, phone):
        assert endpoint["direct_media"] == "no"
        assert endpoint["dtmf_mode"] == "rfc4733"
        assert endpoint["allow"] == "ulaw"
    assert pbx["transport-udp"]["bind"] == "127.0.0.1:5060"
    assert rig["transport-rig"]["bind"] == "127.0.0.1:5070"
    assert "#tryinclude pjsip_rig.conf" in (ASTERISK / "pjsip.conf").read_text()
    assert "#tryinclude extensions_rig.conf" in (ASTERISK / "extensions.conf").read_text()


# -- docker-compose.pool.yml: Asterisk -> HAProxy -> two controllers, PostgreSQL -------------

POOL = ROOT / "docker-compose.pool.yml"
POOL_DIR = ASTERISK / "pool"
CONTROLLERS = ("controller-a", "controller-b")


@pytest.fixture(scope="module")
def pool() -> dict[str, Any]:
    data = yaml.safe_load(POOL.read_text())
    assert isinstance(data, dict)
    return data


def _haproxy() -> tuple[int, dict[str, int], str]:
    """asterisk/pool/haproxy.cfg: the frontend port, ``{server: port}``, the whole text."""
    text = (POOL_DIR / "haproxy.cfg").read_text()
    bind = re.search(r"(?m)^\s+bind 127\.0\.0\.1:(\d+)$", text)
    assert bind, "haproxy.cfg: no bind line"
    servers = {n: int(p) for n, p in re.findall(r"(?m)^\s+server (\S+) 127\.0\.0\.1:(\d+)", text)}
    return int(bind.group(1)), servers, text


def _pool_settings(service: dict[str, Any], env_example: dict[str, str]) -> Any:
    from controller.config import load_settings

    env = {**env_example, **service["environment"]}
    env["DATABASE_URL"] = env["DATABASE_URL"].replace(
        "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}", "pw"
    )
    env["AGENTS_FILE"] = str(ROOT / "agents.toml")
    return load_settings(**env)


def test_pool_services_are_the_documented_shape(pool: dict[str, Any]) -> None:
    services = pool["services"]
    assert set(services) == {"asterisk", "haproxy", "postgres", *CONTROLLERS}
    for name, service in services.items():
        assert service.get("network_mode") == "host", f"{name}: RTP must not cross Docker's NAT"
        assert "ports" not in service, name
    for name in CONTROLLERS:
        controller = services[name]
        assert controller["build"] == "." and controller["env_file"] == ".env"
        assert {"postgres", "haproxy"} <= set(controller["depends_on"])
        assert controller["command"][:2] == ["ari-realtime", "run"]


def test_pool_mounts_exist_and_asterisk_gets_the_pool_files(
    pool: dict[str, Any], compose: dict[str, Any]
) -> None:
    for name, service in pool["services"].items():
        for source, target in _volumes(service):
            assert (ROOT / source).resolve().exists(), f"{name}: mounts missing {source}"
            assert target.startswith("/"), f"{name}: relative target {target}"
    mounted = dict(_volumes(pool["services"]["asterisk"]))
    # Everything the single-controller stack mounts, plus the two outbound-mode files.
    assert dict(_volumes(compose["services"]["asterisk"])).items() <= mounted.items()
    assert mounted["./asterisk/pool/ari_pool.conf"] == "/etc/asterisk/ari_pool.conf"
    assert mounted["./asterisk/pool/websocket_client.conf"] == "/etc/asterisk/websocket_client.conf"
    assert re.search(r"(?m)^#tryinclude ari_pool\.conf$", (ASTERISK / "ari.conf").read_text())
    assert dict(_volumes(pool["services"]["haproxy"])) == {
        "./asterisk/pool/haproxy.cfg": "/usr/local/etc/haproxy/haproxy.cfg"
    }


def test_asterisk_connects_to_haproxy_which_balances_the_controllers(
    pool: dict[str, Any], env_example: dict[str, str]
) -> None:
    frontend, servers, text = _haproxy()
    assert re.search(r"(?m)^\s+mode tcp$", text)
    assert re.search(r"(?m)^\s+option httpchk GET /healthz$", text)
    assert re.search(r"(?m)^\s+balance leastconn$", text)
    assert re.search(r"(?m)^\s+option redispatch$", text)
    clients = dict(conf_sections((POOL_DIR / "websocket_client.conf").read_text()))
    outbound = dict(conf_sections((POOL_DIR / "ari_pool.conf").read_text()))
    [(name, template)] = list(outbound.items())
    assert template["type"] == "outbound_websocket"
    client = clients[template["websocket_client_id"]]
    assert client["connection_type"] == "per_call_config"
    assert client["protocols"] == "ari"
    assert client["uri"] == f"ws://127.0.0.1:{frontend}/ari"
    # Asterisk presents what the controllers check: ARI_USER / ARI_PASSWORD.
    assert client["username"] == env_example["ARI_USER"]
    assert client["password"] == env_example["ARI_PASSWORD"]
    assert template["apps"] == env_example["ARI_APP"]
    assert conf("ari.conf")[template["local_ari_user"]]["type"] == "user"
    listens = sorted(
        int(pool["services"][c]["environment"]["ARI_LISTEN"].rpartition(":")[2])
        for c in CONTROLLERS
    )
    assert sorted(servers.values()) == listens, (servers, listens)


def test_each_pool_controller_is_valid_and_distinct(
    pool: dict[str, Any], env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in DOCUMENTED:
        monkeypatch.delenv(name, raising=False)
    settings = [_pool_settings(pool["services"][c], env_example) for c in CONTROLLERS]
    for s in settings:
        assert s.ari_mode == "outbound"
        assert s.database_url.get_secret_value().startswith("postgresql://ari_realtime:")
    postgres = pool["services"]["postgres"]["environment"]
    for s in settings:
        assert s.database_url.get_secret_value().endswith(f"/{postgres['POSTGRES_DB']}")
    for field in ("ari_listen", "http_listen", "controller_id"):
        values = {getattr(s, field) for s in settings}
        assert len(values) == len(settings), f"{field} must differ: {values}"
    rtp = conf("rtp.conf")["general"]
    ranges = [set(range(s.media_port_range[0], s.media_port_range[1] + 1)) for s in settings]
    ranges.append(set(range(int(rtp["rtpstart"]), int(rtp["rtpend"]) + 1)))
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            assert not a & b, "MEDIA_PORTS overlap each other or Asterisk's RTP"


def test_the_seed_context_for_pool_outbound_calls_exists() -> None:
    from controller.pool.takeover import SEED_CONTEXT

    dialplan = (ASTERISK / "extensions.conf").read_text()
    seed = dialplan.split(f"\n[{SEED_CONTEXT}]\n", 1)[1].split("\n[", 1)[0]
    assert "exten => s,1,Answer()" in seed
    assert "Wait(" in seed
