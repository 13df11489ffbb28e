"""Apple Wallet passes: pass.json, images and strings zipped and signed with py-pkpass.

Apple's signature is a detached PKCS #7 (CMS) SignedData over manifest.json (SHA-1 of every
file), made with the pass type certificate, carrying Apple's WWDR intermediate and a signingTime
attribute (cryptography's PKCS7SignatureBuilder adds signingTime, contentType and
messageDigest by default).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from py_pkpass import models as pk

from wallet.domain.card import LOCALES, PassField, PassLayout, Program, pass_strings

ASSETS_DIR_DEFAULT = Path(__file__).resolve().parent.parent / "assets"
IMAGE_NAMES = tuple(
    f"{image}{scale}.png" for image in ("icon", "logo") for scale in ("", "@2x", "@3x")
)
"""Every pass carries its icon (required) and logo at 1x, 2x and 3x."""


class SigningError(ValueError):
    """The pass certificate, its key or the WWDR intermediate cannot be used."""


@dataclass(frozen=True)
class PassCredentials:
    """The pass type certificate and key, and Apple's WWDR intermediate, loaded once."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    wwdr: x509.Certificate

    @classmethod
    def load(cls, certificate: Path, key: Path, wwdr: Path, password: str = "") -> PassCredentials:
        try:
            cert = x509.load_pem_x509_certificate(certificate.read_bytes())
            private_key = serialization.load_pem_private_key(
                key.read_bytes(), password.encode() if password else None
            )
            intermediate = x509.load_pem_x509_certificate(wwdr.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise SigningError(f"cannot load the pass signing files: {exc}") from None
        if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SigningError("the pass key must be RSA or EC")
        if private_key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise SigningError("the pass key does not belong to the pass certificate")
        return cls(cert, private_key, intermediate)

    def pass_type_id(self) -> str:
        """The certificate's UID attribute: Apple puts the pass type identifier there."""
        uids = self.certificate.subject.get_attributes_for_oid(x509.NameOID.USER_ID)
        return str(uids[0].value) if uids else ""

    def team_id(self) -> str:
        """The certificate's OU: Apple puts the team identifier there."""
        units = self.certificate.subject.get_attributes_for_oid(
            x509.NameOID.ORGANIZATIONAL_UNIT_NAME
        )
        return str(units[0].value) if units else ""


class _SignedPass(pk.Pass):  # type: ignore[misc]
    """py-pkpass reads and parses the certificate files for every pass; a gateway signs many,
    so this signs with credentials loaded once (same PKCS #7 as the library's own method)."""

    credentials: PassCredentials

    def _createSignatureCrypto(self, manifest: str, *_: Any) -> bytes:
        creds = self.credentials
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(manifest.encode())
            .add_signer(creds.certificate, creds.private_key, hashes.SHA256())
            .add_certificate(creds.wwdr)
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature])
        )


def load_images(directory: Path) -> dict[str, bytes]:
    """The pass images from a directory (COALITION_WALLET_ASSETS_DIR, or the bundled ones)."""
    try:
        return {name: (directory / name).read_bytes() for name in IMAGE_NAMES}
    except OSError as exc:
        raise SigningError(f"pass images: {exc}") from None


def _field(spec: PassField) -> pk.Field:
    field: pk.Field
    if spec.date:
        field = pk.DateField(
            spec.key, spec.value, spec.label, pk.DateStyle.MEDIUM, pk.DateStyle.NONE
        )
    elif spec.number:
        field = pk.NumberField(spec.key, spec.value, spec.label)
    else:
        field = pk.Field(spec.key, spec.value, spec.label)
    if spec.change_message:
        field.changeMessage = spec.change_message
    else:
        del field.changeMessage  # an empty changeMessage would announce every change silently
    return field


def build_pass(
    layout: PassLayout,
    program: Program,
    serial_number: str,
    authentication_token: str,
    description: str,
    credentials: PassCredentials,
    images: Mapping[str, bytes],
) -> bytes:
    """The signed .pkpass (a zip) for one card."""
    card = pk.StoreCard()
    for area, fields in (
        (card.headerFields, layout.header),
        (card.primaryFields, layout.primary),
        (card.secondaryFields, layout.secondary),
        (card.auxiliaryFields, layout.auxiliary),
        (card.backFields, layout.back),
    ):
        area.extend(_field(f) for f in fields)
    document = _SignedPass(
        card,
        passTypeIdentifier=program.pass_type_id,
        organizationName=program.organization_name,
        teamIdentifier=program.team_id,
    )
    document.credentials = credentials
    document.serialNumber = serial_number
    document.description = description
    document.logoText = program.program_name
    document.backgroundColor = _rgb(program.background_color)
    document.foregroundColor = _rgb(program.foreground_color)
    document.labelColor = _rgb(program.label_color)
    document.barcode = pk.Barcode(
        layout.barcode_message, pk.BarcodeFormat.QR, layout.barcode_alt_text
    )
    document.webServiceURL = program.passkit_url
    document.authenticationToken = authentication_token
    for name, data in images.items():
        document.addFile(name, io.BytesIO(data))
    for locale in LOCALES:
        document.addFile(f"{locale}.lproj/pass.strings", io.BytesIO(pass_strings(locale)))
    out = document.create(None, None, None, None)
    assert isinstance(out, io.BytesIO)
    return out.getvalue()


def _rgb(hex_color: str) -> str:
    """ "#1f3a5f" -> "rgb(31, 58, 95)": the color form pass.json takes."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"
