"""A throwaway PKI for one local control plane: a CA, serving and client certificates, and
the service-account signing key pair. Everything lives in one directory that is deleted
with the cluster; keys are never reused across clusters."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any test session or demo, short enough that a leaked file is worthless.
VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """Every credential one control plane needs, as files under `directory`."""

    directory: Path
    ca: CertPair
    apiserver: CertPair
    etcd_server: CertPair
    etcd_client: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    apiserver_kubelet_client: CertPair
    kubelet_serving: CertPair
    front_proxy_ca: CertPair
    front_proxy_client: CertPair
    service_account_key: Path
    service_account_pub: Path

    def node_client(self, node_name: str) -> CertPair:
        """The client certificate of a node (CN=system:node:<name>, O=system:nodes), created
        on first use so the Node authorizer and NodeRestriction apply to that node."""
        pair = CertPair(
            self.directory / f"node-{node_name}.crt", self.directory / f"node-{node_name}.key"
        )
        if not pair.cert.exists():
            ca_key, ca_cert = _load_ca(self.ca)
            _issue(
                pair,
                ca_key,
                ca_cert,
                common_name=f"system:node:{node_name}",
                organizations=["system:nodes"],
                client=True,
            )
        return pair


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are fast to generate on a slow machine and accepted by every component.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str, organizations: list[str] | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations or []]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _load_ca(ca: CertPair) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate(ca.cert.read_bytes())


def _create_ca(
    pair: CertPair, common_name: str = "finetune-localcluster-ca"
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pair.key, key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _issue(
    pair: CertPair,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    organizations: list[str] | None = None,
    dns_names: list[str] | None = None,
    ip_addresses: list[str] | None = None,
    client: bool = False,
    server: bool = False,
) -> None:
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    usages = []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names or []]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses or []]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(pair.key, key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# The names the apiserver answers to: loopback for the host, and the in-cluster names a
# pod's client library would use through the `kubernetes` Service.
APISERVER_DNS_NAMES = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]


FRONT_PROXY_CLIENT_NAME = "front-proxy-client"


def create_cluster_pki(directory: Path, service_cluster_ip: str) -> ClusterPKI:
    """Create a fresh CA and every certificate a control plane needs under `directory`.

    `service_cluster_ip` is the first address of the service range, the ClusterIP of the
    `kubernetes` Service, which the apiserver's serving certificate must cover."""
    directory.mkdir(parents=True, exist_ok=True)
    # A reused state directory keeps node certificates signed by the previous CA, and
    # node_client() issues one only when none exists: drop them with the old CA.
    for stale in directory.glob("node-*.*"):
        stale.unlink()

    def pair(stem: str) -> CertPair:
        return CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")

    pki = ClusterPKI(
        directory=directory,
        ca=pair("ca"),
        apiserver=pair("apiserver"),
        etcd_server=pair("etcd-server"),
        etcd_client=pair("etcd-client"),
        admin=pair("admin"),
        controller_manager=pair("kube-controller-manager"),
        scheduler=pair("kube-scheduler"),
        apiserver_kubelet_client=pair("apiserver-kubelet-client"),
        kubelet_serving=pair("kubelet-serving"),
        front_proxy_ca=pair("front-proxy-ca"),
        front_proxy_client=pair("front-proxy-client"),
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )
    ca_key, ca_cert = _create_ca(pki.ca)
    _issue(
        pki.apiserver,
        ca_key,
        ca_cert,
        common_name="kube-apiserver",
        dns_names=APISERVER_DNS_NAMES,
        ip_addresses=["127.0.0.1", service_cluster_ip],
        server=True,
    )
    _issue(
        pki.etcd_server,
        ca_key,
        ca_cert,
        common_name="etcd",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        server=True,
        client=True,
    )
    _issue(pki.etcd_client, ca_key, ca_cert, common_name="kube-apiserver-etcd-client", client=True)
    _issue(
        pki.admin,
        ca_key,
        ca_cert,
        common_name="localcluster-admin",
        organizations=["system:masters"],
        client=True,
    )
    _issue(
        pki.controller_manager,
        ca_key,
        ca_cert,
        common_name="system:kube-controller-manager",
        client=True,
    )
    _issue(pki.scheduler, ca_key, ca_cert, common_name="system:kube-scheduler", client=True)
    # The apiserver presents this to the node agent's kubelet endpoint (pods/log).
    _issue(
        pki.apiserver_kubelet_client,
        ca_key,
        ca_cert,
        common_name="kube-apiserver-kubelet-client",
        organizations=["kubeadm:cluster-admins"],
        client=True,
    )
    _issue(
        pki.kubelet_serving,
        ca_key,
        ca_cert,
        common_name="localcluster-node-agent",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        server=True,
    )
    # The aggregation layer's CA: the apiserver proxies to extension apiservers with it,
    # and controllers read it to authenticate delegated requests.
    proxy_key, proxy_cert = _create_ca(pki.front_proxy_ca, "finetune-localcluster-front-proxy-ca")
    _issue(
        pki.front_proxy_client,
        proxy_key,
        proxy_cert,
        common_name=FRONT_PROXY_CLIENT_NAME,
        client=True,
    )
    # Service-account tokens are signed with RSA, as kube-apiserver's defaults expect.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
