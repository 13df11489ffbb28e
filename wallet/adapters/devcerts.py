"""Development signing certificates shaped like Apple's: a root CA, a WWDR-like intermediate and
a Pass Type ID certificate. Passes signed with them verify with `openssl cms -verify` against the
development root; a real device accepts only Apple-issued ones (docs/wallet.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from partners.ca import write_private_file

DEV_CERT_VALIDITY_DAYS = 825
RSA_KEY_BITS = 2048
"""Apple's pass certificates are RSA 2048."""


@dataclass(frozen=True)
class DevCertPaths:
    root: Path
    wwdr: Path
    certificate: Path
    key: Path


def _name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    now: datetime,
    *,
    ca_path_length: int | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=DEV_CERT_VALIDITY_DAYS))
        .add_extension(
            x509.BasicConstraints(ca=ca_path_length is not None, path_length=ca_path_length),
            critical=True,
        )
        .add_extension(_usage(cert_sign=ca_path_length is not None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca_path_length is None:
        # Apple's pass certificates also carry client auth: the same certificate opens APNs.
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_dev_certs(directory: Path, pass_type_id: str, team_id: str, now: datetime) -> DevCertPaths:
    """Write dev-root.pem, dev-wwdr.pem, pass.pem and pass.key (0600) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = [rsa.generate_private_key(65537, RSA_KEY_BITS) for _ in range(3)]
    root_name = _name((NameOID.COMMON_NAME, "Coalition Development Root CA"))
    wwdr_name = _name(
        (NameOID.COMMON_NAME, "Coalition Development WWDR Intermediate"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "G4"),
    )
    pass_name = _name(
        (NameOID.USER_ID, pass_type_id),
        (NameOID.COMMON_NAME, f"Pass Type ID: {pass_type_id}"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, team_id),
        (NameOID.ORGANIZATION_NAME, "Coalition development"),
    )
    root = _certificate(root_name, keys[0], root_name, keys[0], now, ca_path_length=1)
    wwdr = _certificate(wwdr_name, keys[1], root_name, keys[0], now, ca_path_length=0)
    leaf = _certificate(pass_name, keys[2], wwdr_name, keys[1], now, ca_path_length=None)
    paths = DevCertPaths(
        directory / "dev-root.pem",
        directory / "dev-wwdr.pem",
        directory / "pass.pem",
        directory / "pass.key",
    )
    paths.root.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths.wwdr.write_bytes(wwdr.public_bytes(serialization.Encoding.PEM))
    paths.certificate.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    write_private_file(
        paths.key,
        keys[2].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return paths
