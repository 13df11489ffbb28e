"""The coalition's own certificate authority for partner mutual TLS.

The CA decides every identity: a partner certificate names `partners/{id}` in a URI SAN
(`coalition:partners/{id}`) and in the subject CN, whatever the partner's CSR asked for.
Pure module: no gRPC, no SQL, no wall clock (every time comes from the caller's `now`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME_DEFAULT = "Coalition Partner CA"
SERVER_COMMON_NAME = "Coalition Gateway"
PARTNER_URI_PREFIX = "coalition:partners/"
PARTNER_COMMON_NAME_PREFIX = "partners/"

CERT_VALIDITY_DAYS_MIN = 1
CA_VALIDITY_DAYS_DEFAULT = 3650
CA_VALIDITY_DAYS_MAX = 7300
CLIENT_CERT_VALIDITY_DAYS_DEFAULT = 365
CLIENT_CERT_VALIDITY_DAYS_MAX = 825
SERVER_CERT_VALIDITY_DAYS_DEFAULT = 397
SERVER_CERT_VALIDITY_DAYS_MAX = 825
# Partners' clocks drift; a certificate that is "not yet valid" for a few minutes after
# issuance is a support ticket, so not_before is set slightly in the past.
NOT_BEFORE_BACKDATE_SECONDS = 300

# X.509 caps a CN at 64 characters and the CN is "partners/{id}".
COMMON_NAME_MAX_CHARS = 64
PARTNER_ID_MAX_CHARS = COMMON_NAME_MAX_CHARS - len(PARTNER_COMMON_NAME_PREFIX)
# Lower-case letters, digits and inner hyphens (AIP-122 style): safe inside a URI and a CN.
PARTNER_ID_PATTERN = re.compile(rf"[a-z0-9](?:[a-z0-9-]{{0,{PARTNER_ID_MAX_CHARS - 2}}}[a-z0-9])?")
RSA_KEY_SIZE_MIN_BITS = 2048
# Curves accepted for client certificates by every TLS stack gRPC runs on.
ACCEPTED_CSR_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1)
PRIVATE_FILE_MODE = 0o600


class InvalidCsr(ValueError):
    """The CSR is unparsable, badly signed or carries an unacceptable key."""


class InvalidValidity(ValueError):
    """The requested validity period is out of range."""


class InvalidPartnerId(ValueError):
    """The partner id cannot be written into a certificate identity."""


class InvalidHostname(ValueError):
    """A server hostname is neither an IP address nor an ASCII DNS name."""


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def to_pem(self) -> tuple[bytes, bytes]:
        """Return (certificate PEM, unencrypted PKCS8 private key PEM)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM), _key_pem(self.private_key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """Load a CA, refusing a non-CA certificate or a key that does not match it."""
        certificate = x509.load_pem_x509_certificate(cert_pem)
        private_key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise ValueError("CA private key must be an EC key")
        if private_key.public_key() != certificate.public_key():
            raise ValueError("CA private key does not match the CA certificate")
        if not _is_ca(certificate):
            raise ValueError("certificate is not a CA (no BasicConstraints ca=True)")
        return cls(certificate=certificate, private_key=private_key)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: bytes
    # Only set when the CA generated the key (no CSR); the caller must store it 0600.
    private_key_pem: bytes | None = field(repr=False)
    # Lower-case hex without leading zeros; int(serial_number, 16) gives the X.509 serial.
    serial_number: str
    not_after: datetime


def create_ca(
    common_name: str = CA_COMMON_NAME_DEFAULT,
    *,
    now: datetime,
    validity_days: int = CA_VALIDITY_DAYS_DEFAULT,
) -> CertificateAuthority:
    """Create a self-signed CA that may sign leaf certificates only (path_length=0)."""
    _check_validity(validity_days, CA_VALIDITY_DAYS_MAX)
    not_before, not_after = _validity_window(now, validity_days)
    key = _generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_key_usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate=certificate, private_key=key)


def issue_partner_certificate(
    ca: CertificateAuthority,
    partner_id: str,
    *,
    csr_pem: bytes | None,
    now: datetime,
    validity_days: int = CLIENT_CERT_VALIDITY_DAYS_DEFAULT,
) -> IssuedCertificate:
    """Issue a clientAuth certificate naming `partners/{partner_id}`.

    With a CSR only its public key is used: the CA, not the partner, decides the identity.
    Without one a key is generated and returned in `private_key_pem`.
    """
    if not PARTNER_ID_PATTERN.fullmatch(partner_id):
        raise InvalidPartnerId(
            f"partner id {partner_id!r} must be 1 to {PARTNER_ID_MAX_CHARS} lower-case letters,"
            " digits or inner hyphens"
        )
    _check_validity(validity_days, CLIENT_CERT_VALIDITY_DAYS_MAX)
    key, public_key = _partner_key(csr_pem)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, PARTNER_COMMON_NAME_PREFIX + partner_id)]
    )
    san = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(PARTNER_URI_PREFIX + partner_id)]
    )
    return _issue_leaf(
        ca,
        subject=subject,
        san=san,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        public_key=public_key,
        generated_key=key,
        now=now,
        validity_days=validity_days,
    )


def issue_server_certificate(
    ca: CertificateAuthority,
    hostnames: list[str],
    *,
    now: datetime,
    validity_days: int = SERVER_CERT_VALIDITY_DAYS_DEFAULT,
) -> IssuedCertificate:
    """Issue a serverAuth certificate for the gateway's own TLS, with a generated key."""
    if not hostnames:
        raise InvalidHostname("at least one hostname or IP address is required")
    _check_validity(validity_days, SERVER_CERT_VALIDITY_DAYS_MAX)
    # dict.fromkeys: drop duplicates but keep the caller's order.
    san = x509.SubjectAlternativeName([_general_name(h) for h in dict.fromkeys(hostnames)])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_COMMON_NAME)])
    key = _generate_key()
    return _issue_leaf(
        ca,
        subject=subject,
        san=san,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        public_key=key.public_key(),
        generated_key=key,
        now=now,
        validity_days=validity_days,
    )


def partner_id_from_certificate(cert_pem_or_der: bytes) -> str | None:
    """Return the partner id from the `coalition:partners/{id}` URI SAN, or None.

    Trusts the certificate: call only after TLS verified the chain against the coalition CA.
    None when there is no such SAN or more than one (our CA never issues that).
    Raises ValueError if the bytes are not a certificate.
    """
    certificate = _load_certificate(cert_pem_or_der)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    ids = [
        uri.removeprefix(PARTNER_URI_PREFIX)
        for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(PARTNER_URI_PREFIX)
    ]
    if len(ids) != 1 or not PARTNER_ID_PATTERN.fullmatch(ids[0]):
        return None
    return ids[0]


def make_csr(common_name: str) -> tuple[bytes, bytes]:
    """Generate a P-256 key and a CSR for it: (key PEM, CSR PEM)."""
    key = _generate_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable and writable by the owner only."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, PRIVATE_FILE_MODE)
    # O_CREAT's mode applies only to a new file; an existing one may be world-readable.
    os.fchmod(fd, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _issue_leaf(
    ca: CertificateAuthority,
    *,
    subject: x509.Name,
    san: x509.SubjectAlternativeName,
    usage: x509.ObjectIdentifier,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    generated_key: ec.EllipticCurvePrivateKey | None,
    now: datetime,
    validity_days: int,
) -> IssuedCertificate:
    not_before, not_after = _validity_window(now, validity_days)
    if not_after > ca.certificate.not_valid_after_utc:
        raise InvalidValidity(
            f"certificate would end {not_after.isoformat()}, after the CA itself"
            f" ({ca.certificate.not_valid_after_utc.isoformat()}); rotate the CA"
        )
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
            critical=False,
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    return IssuedCertificate(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
        private_key_pem=None if generated_key is None else _key_pem(generated_key),
        serial_number=format(certificate.serial_number, "x"),
        not_after=certificate.not_valid_after_utc,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    # digitalSignature covers (EC)DHE handshakes, the only kind TLS 1.3 and gRPC use.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _partner_key(
    csr_pem: bytes | None,
) -> tuple[ec.EllipticCurvePrivateKey | None, ec.EllipticCurvePublicKey | rsa.RSAPublicKey]:
    """(generated private key or None, public key to certify)."""
    if csr_pem is not None:
        return None, _public_key_from_csr(csr_pem)
    key = _generate_key()
    return key, key.public_key()


def _public_key_from_csr(csr_pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        signature_valid = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise InvalidCsr(f"CSR is not a parsable PEM certificate request: {error}") from error
    if not signature_valid:
        raise InvalidCsr("CSR signature does not verify against its own public key")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ACCEPTED_CSR_CURVES):
            raise InvalidCsr(f"CSR EC curve {public_key.curve.name} is not P-256 or P-384")
        return public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < RSA_KEY_SIZE_MIN_BITS:
            raise InvalidCsr(
                f"CSR RSA key has {public_key.key_size} bits; at least"
                f" {RSA_KEY_SIZE_MIN_BITS} are required"
            )
        return public_key
    raise InvalidCsr(f"CSR key type {type(public_key).__name__} is not EC or RSA")


def _general_name(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    if not hostname or not hostname.isascii() or any(c.isspace() for c in hostname):
        raise InvalidHostname(
            f"hostname {hostname!r} must be an IP address or an ASCII (IDNA A-label) DNS name"
        )
    return x509.DNSName(hostname)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _load_certificate(cert_pem_or_der: bytes) -> x509.Certificate:
    if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(cert_pem_or_der)
    return x509.load_der_x509_certificate(cert_pem_or_der)


def _check_validity(validity_days: int, maximum_days: int) -> None:
    if not CERT_VALIDITY_DAYS_MIN <= validity_days <= maximum_days:
        raise InvalidValidity(
            f"validity_days must be {CERT_VALIDITY_DAYS_MIN} to {maximum_days}, got {validity_days}"
        )


def _validity_window(now: datetime, validity_days: int) -> tuple[datetime, datetime]:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    # X.509 times have whole-second precision; truncate so not_after matches the certificate.
    start = now.astimezone(UTC).replace(microsecond=0)
    return (
        start - timedelta(seconds=NOT_BEFORE_BACKDATE_SECONDS),
        start + timedelta(days=validity_days),
    )


def _generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
