"""Certificates by ACME (the nginx role's nginx_tls_acme_*) against Debian's pebble.

pebble (the RFC 8555 test CA) and pebble-challtestsrv (its DNS) run on this machine for the
module. challtestsrv answers every name with 127.0.0.1 and pebble's HTTP-01 port is the port
the target publishes NGINX's 8080 on, so the CA's check reaches the NGINX running in the
target, as Let's Encrypt reaches port 80 of a VM. certbot in the target reaches pebble's
directory through the target's default gateway (this machine) and trusts it through a CA
made here for the module. pebble's random sleeps and nonce rejections are off, and so is its
reuse of authorizations (each issue proves the challenge again); PEBBLE_VA_ALWAYS_VALID is
never set: every challenge is fetched for real.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from reslib import NGINX, UIDS, Case, Response, Target, Traffic, converge, run, summary, wait_for

DOMAINS = ["acme.prodstack.test", "www.acme.prodstack.test"]
# Resolves (in pebble's DNS) to an address where nothing listens: a domain whose DNS points
# elsewhere.
ELSEWHERE = "elsewhere.acme.prodstack.test"
TLS_KEY = "/etc/prodstack/nginx/tls/tls.key"
UNIT = "prodstack-acme-renew"
ACCOUNTS = "/etc/prodstack/acme/accounts"


@dataclass
class Pebble:
    directory: str  # the ACME directory URL, as the target reaches it
    ca_bundle: Path  # trusts pebble's own HTTPS (the directory)
    root: str  # pebble's issuing root (PEM): trusts the certificates it issues
    dns_admin: str  # challtestsrv's management URL

    def vars(self, **extra: object) -> str:
        """The converge's -e: ACME on against this pebble, plus `extra`."""
        settings: dict[str, object] = {
            "nginx_tls_acme_enabled": True,
            "nginx_tls_acme_domains": DOMAINS,
            "nginx_tls_acme_email": "ops@acme.prodstack.test",
            "nginx_tls_acme_directory_url": self.directory,
            "nginx_tls_acme_ca_bundle": str(self.ca_bundle),
        }
        return json.dumps({**settings, **extra})


def gateway(target: Target) -> str:
    """The target's default gateway: this machine, as the target reaches it."""
    for line in target.sh("cat", "/proc/net/route").splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    raise AssertionError("the target has no default route")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_ca(d: Path, ip: str) -> None:
    """A throwaway CA and, signed by it, the certificate of pebble's HTTPS for `ip`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
         "-days", "2", "-subj", "/CN=prodstack acme test CA"])  # fmt: skip
    run(["openssl", "req", *ec, "-keyout", str(d / "wfe.key"), "-out", str(d / "wfe.csr"),
         "-subj", "/CN=pebble"])  # fmt: skip
    (d / "ext").write_text(f"subjectAltName=IP:{ip},IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", str(d / "wfe.csr"), "-CA", str(d / "ca.pem"),
         "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "wfe.pem"), "-days", "2",
         "-extfile", str(d / "ext")])  # fmt: skip


@pytest.fixture(scope="module")
def pebble(target: Target, url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    assert shutil.which("pebble") and shutil.which("pebble-challtestsrv"), "no pebble here: make packages"
    d = tmp_path_factory.mktemp("acme")
    gw = gateway(target)
    make_ca(d, gw)
    dns, dns_admin = free_port("127.0.0.1"), free_port("127.0.0.1")
    listen, admin = free_port(gw), free_port("127.0.0.1")
    config = {
        "pebble": {
            "listenAddress": f"{gw}:{listen}",
            "managementListenAddress": f"127.0.0.1:{admin}",
            "certificate": str(d / "wfe.pem"),
            "privateKey": str(d / "wfe.key"),
            "httpPort": int(url.rpartition(":")[2]),
            "tlsPort": target.published("8443/tcp"),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (d / "pebble.json").write_text(json.dumps(config))
    env = {
        "PATH": "/usr/bin:/bin",
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    procs: list[subprocess.Popen[bytes]] = []
    with (d / "challtestsrv.log").open("wb") as dns_log, (d / "pebble.log").open("wb") as log:
        procs.append(subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01",
             f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{dns_admin}"],
            stdout=dns_log, stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
        procs.append(subprocess.Popen(
            ["pebble", "-config", str(d / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=d,
        ))  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        directory = f"https://{gw}:{listen}/dir"
        wait_for(lambda: urllib.request.urlopen(directory, context=ctx, timeout=2).status == 200, 30)
        with urllib.request.urlopen(f"https://127.0.0.1:{admin}/roots/0", context=ctx, timeout=5) as r:
            root = r.read().decode()
        yield Pebble(directory, d / "ca.pem", root, f"http://127.0.0.1:{dns_admin}")
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def served(port: int, name: str = DOMAINS[0]) -> str:
    """SHA-256 of the certificate NGINX serves on the machine's loopback `port` for `name`."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der
    return hashlib.sha256(der).hexdigest()


def verified_names(port: int, root: str, name: str) -> list[str]:
    """The DNS names of the certificate served for `name` when it verifies against `root` for
    that name (chain and hostname); [] when it does not."""
    ctx = ssl.create_default_context(cadata=root)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as tls:
                cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError:
        return []
    alt = cert.get("subjectAltName", ())
    return sorted(str(pair[1]) for pair in alt if isinstance(pair, tuple) and pair[0] == "DNS")


class TlsTraffic(Traffic):
    """Traffic over HTTPS: each request a new connection whose chain must verify against
    `root` (the hostname is not checked: the URL names 127.0.0.1, the certificate the domains)."""

    def __init__(self, url: str, root: str) -> None:
        super().__init__(url)
        self.context = ssl.create_default_context(cadata=root)
        self.context.check_hostname = False

    def _one(self) -> None:
        sent, start, status = time.time(), time.monotonic(), 0
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout, context=self.context) as resp:
                status = resp.status
                resp.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError):
            status = 0
        with self._lock:
            self.responses.append(Response(sent, time.monotonic() - start, status))


def challenges_fetched(target: Target, since: float) -> int:
    """The CA's fetches of a challenge token that NGINX answered 200 since `since` (epoch)."""
    logs = target.docker("logs", "--since", str(int(since)), NGINX, timeout=60)
    return sum(
        1 for line in logs.splitlines() if "/.well-known/acme-challenge/" in line and '"status":200' in line
    )


def test_acme_issue_and_serve(case: Case, target: Target, pebble: Pebble) -> None:
    """31. Certificate by ACME: issued at converge through the running NGINX, served, kept across runs."""
    port = target.published("8443/tcp")
    assert not verified_names(port, pebble.root, DOMAINS[0])  # the self-signed one serves first
    started = time.time()
    res = converge("-e", pebble.vars())
    assert res.rc == 0, res.output[-3000:]
    # The deploy hook's reload is asynchronous: NGINX's new workers serve the new certificate.
    wait_for(lambda: bool(verified_names(port, pebble.root, DOMAINS[0])), 30)
    names = {d: verified_names(port, pebble.root, d) for d in DOMAINS}
    fetched = challenges_fetched(target, started - 5)
    key = target.sh("stat", "-c", "%u %g %a", TLS_KEY).split()
    timer = target.sh("systemctl", "is-enabled", f"{UNIT}.timer", check=False).strip()
    issued = served(port)
    again = converge("-e", pebble.vars())
    accounts = target.sh("find", ACCOUNTS, "-name", "regr.json").split()
    case.done = (
        f"converge with nginx_tls_acme_enabled for {', '.join(DOMAINS)} against pebble (HTTP-01 to the "
        "target's published port), then the same converge again"
    )
    case.expected = (
        "the CA fetches each token from the running NGINX; HTTPS serves a certificate that verifies against "
        "pebble's root for each name; key 0400 owned by NGINX's UID; renewal timer enabled; the second "
        "converge changes nothing, keeps the certificate and the one ACME account"
    )
    case.measured = (
        f"issue converge {res.seconds:.0f} s (changed={res.changed}); {fetched} challenge fetches "
        f"answered 200; names served {sorted(set(sum(names.values(), [])))}; key {' '.join(key)}; "
        f"timer {timer}; second converge {again.seconds:.0f} s changed={again.changed}; "
        f"{len(accounts)} account(s)"
    )
    assert all(n == sorted(DOMAINS) for n in names.values()), names
    assert fetched >= len(DOMAINS)
    assert key == [str(UIDS["nginx"]), str(UIDS["nginx"]), "400"]
    assert timer == "enabled"
    assert again.rc == 0 and again.changed == 0, again.output[-3000:]
    assert served(port) == issued
    assert len(accounts) == 1, accounts


def test_acme_renewal_by_timer(case: Case, target: Target, pebble: Pebble) -> None:
    """32. Renewal: the timer's unit renews a certificate that is due; NGINX reloads, no request fails."""
    port = target.published("8443/tcp")
    old = served(port)
    # pebble's certificates last 5 years: renewing within 10 years of expiry makes this one due.
    due = pebble.vars(nginx_tls_acme_renew_before_days=3650)
    res = converge("--tags", "nginx", "-e", due)
    assert res.rc == 0, res.output[-3000:]
    assert served(port) == old  # a converge does not renew a valid certificate: the timer does
    before = target.identity()
    with TlsTraffic(f"https://127.0.0.1:{port}/", pebble.root) as traffic:
        time.sleep(3)
        t0 = time.monotonic()
        target.sh("systemctl", "start", f"{UNIT}.service", timeout=600, check=False)
        renew_s = time.monotonic() - t0
        switched = wait_for(lambda: served(port) != old, 60)
        time.sleep(3)
    result = target.sh("systemctl", "show", "-p", "Result", "--value", f"{UNIT}.service").strip()
    journal = target.sh("journalctl", "-u", f"{UNIT}.service", "-n", "40", "-o", "cat")
    responses = traffic.snapshot()
    failed = [r for r in responses if not r.ok]
    check = converge("--check", "-e", due)
    case.done = (
        "`site.yml --tags nginx` with nginx_tls_acme_renew_before_days=3650 (the certificate is due), then "
        f"`systemctl start {UNIT}.service` under HTTPS traffic (a new TLS connection per request, chain "
        "verified against pebble's root); then `site.yml --check`"
    )
    case.expected = (
        "the converge keeps the certificate; the unit succeeds, a new certificate is served, NGINX is "
        "reloaded (no container restarted), no request fails; --check reports no change"
    )
    case.measured = (
        f"renewal unit {renew_s:.1f} s ({result}), new certificate served {switched:.1f} s after it ended; "
        f"{summary(responses)}; containers untouched: {target.identity() == before}; "
        f"--check changed={check.changed}"
    )
    assert result == "success", journal
    assert "installed certificate" in journal, journal
    assert target.identity() == before
    assert not failed, summary(failed)
    assert check.rc == 0 and check.changed == 0, check.output[-3000:]


def test_acme_unmet_challenge(case: Case, target: Target, pebble: Pebble) -> None:
    """33. A challenge the CA cannot meet fails the play with the CA's reason; the old certificate serves."""
    req = urllib.request.Request(
        f"{pebble.dns_admin}/add-a",
        data=json.dumps({"host": f"{ELSEWHERE}.", "addresses": ["127.0.0.2"]}).encode(),
        method="POST",
    )
    urllib.request.urlopen(req, timeout=5).close()
    port = target.published("8443/tcp")
    old = served(port)
    before = target.identity()
    with TlsTraffic(f"https://127.0.0.1:{port}/", pebble.root) as traffic:
        res = converge("--tags", "nginx", "-e", pebble.vars(nginx_tls_acme_domains=[*DOMAINS, ELSEWHERE]))
        time.sleep(2)
    flat = " ".join(res.output.split())  # the callback wraps long messages
    found = re.search(r"No certificate for .*?NGINX keeps serving the certificate it had\.", flat)
    responses = traffic.snapshot()
    failed = [r for r in responses if not r.ok]
    case.done = (
        f"`site.yml --tags nginx` adding {ELSEWHERE}, which pebble's DNS points at 127.0.0.2 "
        "(nothing listens there), under HTTPS traffic"
    )
    case.expected = (
        "the play fails naming the domain and the CA's reason; the same certificate keeps serving; no "
        "container restarted; no request fails"
    )
    case.measured = (
        f"rc={res.rc} in {res.seconds:.0f} s: {found.group(0)[:400] if found else flat[-400:]}; "
        f"certificate unchanged: {served(port) == old}; {summary(responses)}"
    )
    assert res.rc != 0
    assert found, flat[-3000:]
    assert ELSEWHERE in found.group(0) and "connection refused" in found.group(0).lower()
    assert served(port) == old
    assert target.identity() == before
    assert not failed, summary(failed)
