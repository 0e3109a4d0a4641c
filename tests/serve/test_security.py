"""TLS (and mTLS), bearer tokens and the per-client rate limit refuse whom they should, over real sockets."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from optiserve.errors import UsageError
from optiserve.serve.app import ServeConfig, app_for_model
from optiserve.serve.security import AccessPolicy, RateLimiter, authorized
from optiserve.serve.server import ServerOptions
from tests.serve.live_server import live_server

BODY = {"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


def _cert(out: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    if issuer is None:
        _cert.ca = (cert, key)  # type: ignore[attr-defined]
    return out / f"{name}.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _cert(d, "ca")
    ca = _cert.ca  # type: ignore[attr-defined]
    _cert(d, "server", ca)
    _cert(d, "client", ca)
    return d


@pytest.fixture(scope="module")
def secured(mlp_path: Path, pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tokens = tmp_path_factory.mktemp("tok") / "tokens"
    tokens.write_text("# who may call\ns3cret-one\ns3cret-two\n")
    access = AccessPolicy.from_token_file(tokens)
    app = app_for_model(mlp_path, "fp32", 1, ServeConfig("mlp", max_batch=2), access=access)
    opts = ServerOptions(tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem")
    with live_server(app, opts) as port:
        yield port


def _ctx(pki: Path, client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return ctx


def test_mtls_and_tokens(secured: int, pki: Path) -> None:
    url = f"https://localhost:{secured}"
    with httpx.Client(base_url=url, verify=_ctx(pki, client_cert=True)) as c:
        assert c.get("/v2/health/ready").status_code == 200  # probes stay open
        r = c.post("/v2/models/mlp/infer", json=BODY)
        assert r.status_code == 401 and "bearer" in r.json()["error"] and "Bearer" in r.headers["www-authenticate"]
        r = c.post("/v2/models/mlp/infer", json=BODY, headers={"Authorization": "Bearer s3cret-on"})
        assert r.status_code == 401
        assert c.get("/v2/models/mlp", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.post("/v2/models/mlp/infer", json=BODY, headers={"Authorization": "Bearer s3cret-two"})
        assert r.status_code == 200, r.text
        assert 'optiserve_http_responses_total{status="401"} 3.0' in c.get("/metrics").text
    with pytest.raises(httpx.TransportError):  # TLS without a client certificate: refused (TLS 1.3: at first read)
        httpx.get(f"{url}/v2/health/ready", verify=_ctx(pki, client_cert=False)).raise_for_status()
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
        httpx.get(f"http://localhost:{secured}/v2/health/ready").raise_for_status()


def test_rate_limit_per_client(mlp_path: Path) -> None:
    app = app_for_model(mlp_path, "fp32", 1, ServeConfig("mlp", max_batch=2), access=AccessPolicy(rate=2, burst=3))
    with live_server(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        codes = [c.post("/v2/models/mlp/infer", json=BODY).status_code for _ in range(10)]
        assert codes[:3] == [200, 200, 200] and codes.count(429) >= 5, codes
        r = c.post("/v2/models/mlp/infer", json=BODY)
        assert r.status_code in (200, 429) and ("error" in r.json() if r.status_code == 429 else True)


def test_policy_parts() -> None:
    policy = AccessPolicy((b"t",))
    assert authorized(policy, "/v2/health/live", None) and not authorized(policy, "/v2", None)
    assert authorized(policy, "/v2", b"bearer t") and not authorized(policy, "/v2", b"Basic dA==")
    limiter = RateLimiter(1.0, 1)
    assert limiter.allow("a", 0.0) and not limiter.allow("a", 0.1) and limiter.allow("b", 0.1)
    assert limiter.allow("a", 1.2)
    with pytest.raises(UsageError, match="no token"):
        AccessPolicy.from_token_file(Path("/dev/null"))
    with pytest.raises(UsageError, match="TLS"):
        ServerOptions(tls_cert=Path("/nonexistent"), tls_key=Path("/nonexistent")).check()
