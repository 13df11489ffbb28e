"""Unit tests for the coalition partner CA (partners.ca)."""

from __future__ import annotations

import base64
import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from partners.ca import (
    CA_VALIDITY_DAYS_DEFAULT,
    CLIENT_CERT_VALIDITY_DAYS_DEFAULT,
    CLIENT_CERT_VALIDITY_DAYS_MAX,
    CertificateAuthority,
    InvalidCsr,
    InvalidHostname,
    InvalidPartnerId,
    InvalidValidity,
    create_ca,
    issue_partner_certificate,
    issue_server_certificate,
    make_csr,
    partner_id_from_certificate,
    write_private_file,
)

NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)
TAMPER_MARKER = b"attacker-chosen"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca(now=NOW)


def _load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _uris(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _pem(der: bytes, label: str) -> bytes:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


def _tampered_csr() -> bytes:
    # Changing a byte of the signed subject keeps the DER parsable but breaks the signature.
    _, csr_pem = make_csr(TAMPER_MARKER.decode())
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(TAMPER_MARKER) == 1
    tampered = der.replace(TAMPER_MARKER, TAMPER_MARKER[:-1] + b"X")
    return _pem(tampered, "CERTIFICATE REQUEST")


def test_ca_is_a_self_signed_ca(ca: CertificateAuthority) -> None:
    certificate = ca.certificate
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    certificate.verify_directly_issued_by(certificate)
    assert _common_name(certificate) == "Coalition Partner CA"
    assert certificate.not_valid_before_utc <= NOW
    assert certificate.not_valid_after_utc == NOW + timedelta(days=CA_VALIDITY_DAYS_DEFAULT)


def test_ca_round_trips_through_pem(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.to_pem()
    assert b"BEGIN PRIVATE KEY" in key_pem
    loaded = CertificateAuthority.load(cert_pem, key_pem)
    assert loaded.certificate == ca.certificate
    assert loaded.to_pem() == (cert_pem, key_pem)


def test_ca_load_rejects_a_key_that_does_not_match(ca: CertificateAuthority) -> None:
    cert_pem, _ = ca.to_pem()
    other_key_pem, _ = make_csr("someone else")
    with pytest.raises(ValueError, match="does not match"):
        CertificateAuthority.load(cert_pem, other_key_pem)


def test_ca_load_rejects_a_leaf_certificate(ca: CertificateAuthority) -> None:
    issued = issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW)
    assert issued.private_key_pem is not None
    with pytest.raises(ValueError, match="not a CA"):
        CertificateAuthority.load(issued.certificate_pem, issued.private_key_pem)


def test_partner_certificate_from_csr_names_the_partner(ca: CertificateAuthority) -> None:
    _, csr_pem = make_csr("partners/someone-else")
    issued = issue_partner_certificate(ca, "acme-air", csr_pem=csr_pem, now=NOW)
    certificate = _load(issued.certificate_pem)

    certificate.verify_directly_issued_by(ca.certificate)
    assert issued.private_key_pem is None
    assert _uris(certificate) == ["coalition:partners/acme-air"]
    assert _common_name(certificate) == "partners/acme-air"
    assert partner_id_from_certificate(issued.certificate_pem) == "acme-air"
    assert certificate.public_key() == x509.load_pem_x509_csr(csr_pem).public_key()


def test_partner_certificate_passes_rfc5280_client_path_validation(
    ca: CertificateAuthority,
) -> None:
    # Stricter than verify_directly_issued_by: checks the extension profile TLS stacks enforce.
    issued = issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW)
    verifier = PolicyBuilder().store(Store([ca.certificate])).time(NOW).build_client_verifier()
    verified = verifier.verify(_load(issued.certificate_pem), [])
    assert verified.subjects == [x509.UniformResourceIdentifier("coalition:partners/acme")]


def test_partner_certificate_extensions(ca: CertificateAuthority) -> None:
    issued = issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW)
    certificate = _load(issued.certificate_pem)

    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert int(issued.serial_number, 16) == certificate.serial_number
    expected_end = NOW + timedelta(days=CLIENT_CERT_VALIDITY_DAYS_DEFAULT)
    assert issued.not_after == certificate.not_valid_after_utc == expected_end


def test_partner_certificate_without_csr_returns_matching_key(ca: CertificateAuthority) -> None:
    issued = issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW)
    assert issued.private_key_pem is not None
    key = serialization.load_pem_private_key(issued.private_key_pem, password=None)
    assert key.public_key() == _load(issued.certificate_pem).public_key()


def test_serial_numbers_differ(ca: CertificateAuthority) -> None:
    first = issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW)
    second = issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW)
    assert first.serial_number != second.serial_number


@pytest.mark.parametrize(
    "csr_pem",
    [
        pytest.param(_tampered_csr(), id="bad-signature"),
        pytest.param(b"not a csr", id="garbage"),
        pytest.param(_pem(b"\x30\x03\x02\x01\x00", "CERTIFICATE REQUEST"), id="bad-der"),
    ],
)
def test_invalid_csr_is_rejected(ca: CertificateAuthority, csr_pem: bytes) -> None:
    with pytest.raises(InvalidCsr):
        issue_partner_certificate(ca, "acme", csr_pem=csr_pem, now=NOW)


def test_csr_with_weak_rsa_key_is_rejected(ca: CertificateAuthority) -> None:
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")]))
        .sign(weak_key, hashes.SHA256())
    )
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidCsr, match="1024 bits"):
        issue_partner_certificate(ca, "acme", csr_pem=csr_pem, now=NOW)


@pytest.mark.parametrize("validity_days", [0, -1, CLIENT_CERT_VALIDITY_DAYS_MAX + 1])
def test_validity_out_of_range_is_rejected(ca: CertificateAuthority, validity_days: int) -> None:
    with pytest.raises(InvalidValidity):
        issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW, validity_days=validity_days)


def test_validity_at_max_is_accepted(ca: CertificateAuthority) -> None:
    issued = issue_partner_certificate(
        ca, "acme", csr_pem=None, now=NOW, validity_days=CLIENT_CERT_VALIDITY_DAYS_MAX
    )
    assert issued.not_after == NOW + timedelta(days=CLIENT_CERT_VALIDITY_DAYS_MAX)


def test_certificate_may_not_outlive_the_ca() -> None:
    short_ca = create_ca(now=NOW, validity_days=30)
    with pytest.raises(InvalidValidity, match="after the CA"):
        issue_partner_certificate(short_ca, "acme", csr_pem=None, now=NOW, validity_days=31)


@pytest.mark.parametrize("partner_id", ["", "Acme", "acme/other", "-acme", "a" * 56, "ac me"])
def test_unsafe_partner_id_is_rejected(ca: CertificateAuthority, partner_id: str) -> None:
    with pytest.raises(InvalidPartnerId):
        issue_partner_certificate(ca, partner_id, csr_pem=None, now=NOW)


def test_naive_now_is_rejected(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW.replace(tzinfo=None))


def test_server_certificate_names_hosts_and_addresses(ca: CertificateAuthority) -> None:
    issued = issue_server_certificate(ca, ["localhost", "127.0.0.1", "::1", "localhost"], now=NOW)
    certificate = _load(issued.certificate_pem)

    certificate.verify_directly_issued_by(ca.certificate)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert issued.private_key_pem is not None
    key = serialization.load_pem_private_key(issued.private_key_pem, password=None)
    assert key.public_key() == certificate.public_key()


@pytest.mark.parametrize(
    "name",
    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
)
def test_server_certificate_passes_rfc5280_server_path_validation(
    ca: CertificateAuthority, name: x509.DNSName | x509.IPAddress
) -> None:
    issued = issue_server_certificate(ca, ["localhost", "127.0.0.1"], now=NOW)
    policy = PolicyBuilder().store(Store([ca.certificate])).time(NOW)
    chain = policy.build_server_verifier(name).verify(_load(issued.certificate_pem), [])
    assert chain[-1] == ca.certificate


@pytest.mark.parametrize("hostnames", [[], [""], ["bücher.example"], ["bad host"]])
def test_server_certificate_rejects_bad_hostnames(
    ca: CertificateAuthority, hostnames: list[str]
) -> None:
    with pytest.raises(InvalidHostname):
        issue_server_certificate(ca, hostnames, now=NOW)


def test_partner_id_is_none_without_partner_san(ca: CertificateAuthority) -> None:
    server = issue_server_certificate(ca, ["localhost"], now=NOW)
    assert partner_id_from_certificate(server.certificate_pem) is None
    assert partner_id_from_certificate(ca.to_pem()[0]) is None


def test_partner_id_reads_der(ca: CertificateAuthority) -> None:
    issued = issue_partner_certificate(ca, "acme", csr_pem=None, now=NOW)
    der = _load(issued.certificate_pem).public_bytes(serialization.Encoding.DER)
    assert partner_id_from_certificate(der) == "acme"


def test_write_private_file_is_owner_only(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.key"
    write_private_file(fresh, b"secret")
    assert fresh.read_bytes() == b"secret"
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_write_private_file_tightens_an_existing_file(tmp_path: Path) -> None:
    existing = tmp_path / "existing.key"
    existing.write_bytes(b"old contents that are longer")
    existing.chmod(0o644)
    write_private_file(existing, b"new")
    assert existing.read_bytes() == b"new"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
