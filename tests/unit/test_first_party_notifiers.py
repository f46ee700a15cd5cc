"""The notifiers shipped in nai_plugins: a JSON line per event in a file, and a JSON POST
(with a Slack-style `text`) to a local HTTP(S) server; each only for the events asked.
A user's webhook never reaches inside the network, however its name resolves."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nai_plugins import notify_file, webhook
from nai_server.plugins.contracts import JobEvent, Refuse


def event(kind: str, job_id: int = 4) -> JobEvent:
    return JobEvent(event=kind, job_id=job_id, user="ann", group=None, name="train",
                    state=kind, at=1.0, exit_code=1 if kind == "failed" else None)


def test_notify_file_appends_the_events_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    options = {"path": str(path), "events": ["failed"]}
    for kind in ("started", "failed", "succeeded"):
        notify_file.nai_job_event(event(kind), options)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(e["event"], e["job_id"], e["exit_code"]) for e in lines] == [("failed", 4, 1)]
    assert path.stat().st_mode & 0o777 == 0o600


Served = tuple[str, list[dict[str, Any]]]  # a server's URL, the bodies POSTed to it
Dns = dict[str, list[str]]  # the `resolver` fixture's names and answers


def serve(tls: ssl.SSLContext | None = None, redirect: str | None = None
          ) -> tuple[HTTPServer, list[dict[str, Any]]]:
    """A local HTTP server (HTTPS with `tls`) on 127.0.0.1, serving in a thread: it and
    the JSON bodies POSTed to it, each with the Host header it came with as `_host`.
    It answers 204, or with `redirect` a 307 to that URL."""
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.append({**body, "_host": self.headers["Host"]})
            self.send_response(307 if redirect else 204)
            if redirect:
                self.send_header("Location", redirect)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


@pytest.fixture
def hook_server() -> Iterator[Served]:
    server, got = serve()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()
    server.server_close()


PUBLIC = "8.8.8.8"  # a public address; this test's "internet" refuses every connection


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Dns:
    """The names this test's DNS answers, each with its answers in turn (the last one
    repeats; other names go to the real resolver). A connection that leads to PUBLIC is
    refused, as a host on the internet no test may reach; each connection made is
    listed, as the name or address it was asked for, in `answers["connected"]`."""
    answers: Dns = {"connected": []}
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        ips = answers[host]
        ip = ips.pop(0) if len(ips) > 1 else ips[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))]

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        host, port = address[:2]
        answers["connected"].append(host)
        ip = getaddrinfo(host, port)[0][4][0] if host in answers else host
        if ip == PUBLIC:
            raise ConnectionRefusedError(f"{PUBLIC} stands for the internet here")
        return real_connect((ip, port), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return answers


def test_webhook_posts_json_with_a_text_field(hook_server: Served) -> None:
    url, got = hook_server
    options = {"url": url, "events": ["succeeded", "failed"], "timeout": 5}
    for kind in ("started", "failed"):
        webhook.nai_job_event(event(kind), options)
    assert len(got) == 1
    assert got[0]["event"] == "failed" and got[0]["job_id"] == 4
    assert got[0]["text"] == "nai: job 4 train of ann failed (exit 1)"


def test_a_webhook_that_redirects_is_not_followed(hook_server: Served) -> None:
    """A redirect would lead the event to a host nobody checked: it fails the delivery,
    and the log says what to do."""
    inside, got = hook_server
    server, redirected = serve(redirect=inside)
    try:
        with pytest.raises(webhook.DeliveryFailed, match=r"307 .*use the URL it leads to"):
            webhook.nai_job_event(event("failed"),
                                  {"url": f"http://127.0.0.1:{server.server_port}/x"})
    finally:
        server.shutdown()
        server.server_close()
    assert len(redirected) == 1 and got == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/x",
                                 "http://169.254.169.254/latest/meta-data",
                                 "https://10.1.2.3/h", "http://[::1]/h"])
def test_a_users_webhook_may_not_reach_inside_the_network(url: str) -> None:
    """Without the admin's list of hosts, a user's URL must be a public address: the
    root daemon would otherwise POST to loopback, private or metadata addresses."""
    with pytest.raises(Refuse, match="not a public address"):
        webhook.nai_notify_check(url, {})
    host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0] if "[" not in url \
        else "::1"
    webhook.nai_notify_check(url, {"user_hosts": [host]})  # the admin allows it by name


@pytest.mark.parametrize("url, why", [("ftp://hooks.example/h", "http:// or https://"),
                                      ("https:///h", "http:// or https://"),
                                      ("https://hooks.example:99999/h", "from 1 to 65535")])
def test_a_url_the_webhook_cannot_use_is_refused_with_what_to_give(url: str, why: str) -> None:
    with pytest.raises(Refuse, match=why):
        webhook.nai_notify_check(url, {})


def test_a_name_that_does_not_resolve_is_checked_again_at_delivery() -> None:
    """Subscribing to a name that does not resolve now is allowed (no network, a host
    to come); delivering to it is refused unless it then names a public address."""
    url = "https://hooks.invalid/T0"
    webhook.nai_notify_check(url, {})
    with pytest.raises(Refuse, match="cannot resolve"):
        webhook.nai_notify_user(event("failed"), url, {})


@pytest.mark.parametrize("url", [
    "http://[::ffff:127.0.0.1]/h",  # IPv4-mapped
    "http://[::7f00:1]/h",  # IPv4-compatible
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::7f00:1]/h",  # NAT64 of 127.0.0.1
    "http://[64:ff9b:1::808:808]/h",  # local-use NAT64: whatever the site made of it
    "http://[2002:a01:203::1]/h",  # 6to4 of 10.1.2.3
    "http://[2002:7f00:1::1]/h",  # 6to4 of 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/h",  # Teredo
    "http://[::ffff:0:7f00:1]/h",  # IPv4-translated (SIIT) 127.0.0.1
    "http://[fec0::1]/h",  # site-local (deprecated, still routed inside some sites)
])
def test_an_ipv6_address_that_carries_an_inside_ipv4_one_is_not_public(url: str) -> None:
    """IPv6 forms that lead to an IPv4 address (which Python 3.11 calls global) are
    as public as that address: a NAT64 or 6to4 way to loopback or the metadata
    service is refused like the address itself."""
    with pytest.raises(Refuse, match="not a public address"):
        webhook.nai_notify_check(url, {})


@pytest.mark.parametrize("url", ["http://[64:ff9b::808:808]/h", "http://[2002:808:808::1]/h",
                                 "http://[::ffff:8.8.8.8]/h", "https://[2606:4700::1111]/h",
                                 "http://[::ffff:0:808:808]/h"])
def test_an_ipv6_address_that_carries_a_public_ipv4_one_is_public(url: str) -> None:
    webhook.nai_notify_check(url, {})


def test_a_rebinding_name_cannot_lead_a_delivery_inside(hook_server: Served,
                                                        resolver: Dns) -> None:
    """A name that answers a public address to the check and loopback right after
    (DNS rebinding, TTL 0) gets its delivery sent to the address that was checked:
    the local server listening on loopback never hears of it."""
    url, got = hook_server
    resolver["rebind.test"] = [PUBLIC, "127.0.0.1"]
    target = f"http://rebind.test:{urlsplit(url).port}/hook"
    with pytest.raises(OSError, match="stands for the internet"):
        webhook.nai_notify_user(event("failed"), target, {"timeout": 5})
    assert got == []
    assert resolver["connected"] == [PUBLIC]


def test_a_delivery_goes_past_proxy_variables(hook_server: Served, resolver: Dns,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would look the name up again, after the check: proxy variables are not
    followed (here, one that points at a local server)."""
    url, got = hook_server
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, url.rsplit("/", 1)[0])
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    resolver["hooks.test"] = [PUBLIC]
    with pytest.raises(OSError, match="stands for the internet"):
        webhook.nai_notify_user(event("failed"), "http://hooks.test/T0", {"timeout": 5})
    assert got == []
    assert resolver["connected"] == [PUBLIC]


def test_the_admins_webhook_goes_through_the_hosts_proxy(hook_server: Served,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The admin's own URL (no user chose it) is reached as any program of the host
    reaches the internet: through its proxy where one is set, since some sites have no
    other way out. Here the proxy is the local server, and the name it is asked for
    resolves nowhere."""
    proxy, got = hook_server
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy.rsplit("/", 1)[0])
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    webhook.nai_job_event(event("failed"), {"url": "http://hooks.invalid/T0", "timeout": 5})
    assert len(got) == 1 and got[0]["_host"] == "hooks.invalid"


def self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    """A certificate for `name`, signed by its own key: (certificate, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_checks_the_certificate_against_the_urls_host(
        tmp_path: Path, resolver: Dns, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connecting to the pinned address, HTTPS still names the URL's host: in the TLS
    handshake (SNI), in the certificate it accepts, and in the Host header. A server
    whose certificate is for another name is refused before anything is sent."""
    cert, key = self_signed("hooks.test", tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the only authority trusted
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    named: list[str | None] = []

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        named.append(name)

    tls.sni_callback = sni
    server, got = serve(tls)
    try:
        port = server.server_port
        resolver["hooks.test"] = resolver["other.test"] = ["127.0.0.1"]
        options = {"timeout": 5, "user_hosts": ["hooks.test", "other.test"]}
        webhook.nai_notify_user(event("failed"), f"https://hooks.test:{port}/h", options)
        assert [(e["job_id"], e["_host"]) for e in got] == [(4, f"hooks.test:{port}")]
        with pytest.raises(OSError, match=r"not valid for 'other\.test'"):
            webhook.nai_notify_user(event("failed"), f"https://other.test:{port}/h",
                                    options)
        assert len(got) == 1
        assert named == ["hooks.test", "other.test"]
    finally:
        server.shutdown()
        server.server_close()
