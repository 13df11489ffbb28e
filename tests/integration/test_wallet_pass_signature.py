"""Apple Wallet passes checked the way Apple checks them, with development certificates.

A .pkpass is a zip: manifest.json holds the SHA-1 of every other file, and `signature` is a
detached CMS SignedData over manifest.json made with the pass type certificate, carrying the
WWDR intermediate and a signingTime attribute. The signature is verified here with the system
openssl (required: a missing openssl fails these tests instead of skipping them).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import struct
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs7
from wallet_support import PASS_TYPE_ID, TEAM_ID, dev_certs

from gateway.domain.pii import PiiVault
from gateway.entrypoints.cli import main
from wallet.adapters.devcerts import DevCertPaths
from wallet.adapters.pkpass import (
    ASSETS_DIR_DEFAULT,
    IMAGE_NAMES,
    PassCredentials,
    SigningError,
    build_pass,
    load_images,
)
from wallet.config import PASS_TYPE_ID_DEFAULT, TEAM_ID_DEFAULT
from wallet.domain.card import LOCALES, STRINGS, CardContent, Program, pass_layout, strings_for

OPENSSL_TIMEOUT_S = 30
SIGNING_CLOCK_SLACK = timedelta(minutes=10)
SERIAL = "0123456789abcdef0123456789abcdef"
OTHER_SERIAL = "fedcba9876543210fedcba9876543210"
PROGRAM = Program(pass_type_id=PASS_TYPE_ID, team_id=TEAM_ID, web_url="https://wallet.example.org/")
VAULT = PiiVault(b"wallet-pass-signature-test-secret-0123456789")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ICON_WIDTHS = {"icon.png": 29, "icon@2x.png": 58, "icon@3x.png": 87}
LOGO_MAX_1X = (160, 50)
"""Apple's largest logo at 1x (width, height); 2x and 3x scale it."""

FULL = CardContent(
    member_name='Zoë "Z" Müller',
    loyalty_number="123456789012",
    locale="fr-CA",
    balance_points=12_345,
    tier_code="gold",
    tier_name="Gold",
    next_tier_name="Platinum",
    points_to_next_tier=5_000,
    expiring_points=250,
    expiring_time=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    partners=("Brand A", "Brand B"),
)
BARE = replace(
    FULL,
    locale="en",
    tier_code="platinum",
    tier_name="Platinum",
    next_tier_name="",
    points_to_next_tier=0,
    expiring_points=0,
    expiring_time=None,
    partners=(),
)
CARDS = [pytest.param(FULL, id="everything-shown"), pytest.param(BARE, id="top-tier-nothing-due")]

_STRINGS_LINE = re.compile(r'^"((?:[^"\\]|\\.)*)" = "((?:[^"\\]|\\.)*)";$')
_ESCAPE = re.compile(r"\\(.)")
_RGB = re.compile(r"^rgb\((\d{1,3}), (\d{1,3}), (\d{1,3})\)$")


# -- helpers ---------------------------------------------------------------------------------


def make_pass(
    certs: DevCertPaths,
    card: CardContent = FULL,
    serial: str = SERIAL,
    program: Program = PROGRAM,
) -> bytes:
    """A pass as wallet.service.cards.build_pkpass makes it."""
    credentials = PassCredentials.load(certs.certificate, certs.key, certs.wwdr)
    description = f"{program.program_name} — {strings_for(card.locale)['DESCRIPTION']}"
    return build_pass(
        pass_layout(card, program),
        program,
        serial,
        VAULT.pass_token(serial),
        description,
        credentials,
        load_images(ASSETS_DIR_DEFAULT),
    )


def zip_members(pkpass: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        names = archive.namelist()
        assert len(names) == len(set(names)), f"duplicate zip entries: {names}"
        return {name: archive.read(name) for name in names}


def unpack(pkpass: bytes, directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name, data in zip_members(pkpass).items():
        target = directory / name
        assert target.resolve().is_relative_to(directory.resolve()), name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def manifest_mismatches(directory: Path) -> set[str]:
    """Files whose SHA-1 differs from manifest.json's, as Wallet checks them."""
    manifest: dict[str, str] = json.loads((directory / "manifest.json").read_bytes())
    return {
        name for name, digest in manifest.items() if sha1((directory / name).read_bytes()) != digest
    }


def parse_strings(data: bytes) -> dict[str, str]:
    """A pass.strings file of `"KEY" = "value";` lines (UTF-8), unescaped."""
    entries: dict[str, str] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = _STRINGS_LINE.match(line)
        assert match, f'line {number} is not `"KEY" = "value";`: {line!r}'
        key, value = (_ESCAPE.sub(_unescape, part) for part in match.groups())
        assert key not in entries, f"{key} defined twice"
        entries[key] = value
    return entries


def _unescape(match: re.Match[str]) -> str:
    return {"n": "\n"}.get(match.group(1), match.group(1))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR", "the first PNG chunk is not IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def all_fields(pass_json: dict[str, Any]) -> list[dict[str, Any]]:
    card = pass_json["storeCard"]
    return [
        field
        for area in (
            "headerFields",
            "primaryFields",
            "secondaryFields",
            "auxiliaryFields",
            "backFields",
        )
        for field in card.get(area, [])
    ]


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def run_openssl(openssl: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [openssl, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )


def cms_verify(openssl: str, directory: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """Apple's check of a pass signature, as openssl does it."""
    return run_openssl(
        openssl,
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-purpose",
        "any",
        "-in",
        directory / "signature",
        "-content",
        directory / "manifest.json",
        "-CAfile",
        root,
        "-out",
        os.devnull,
    )


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail(
            "openssl is not installed: the pass signature cannot be verified "
            "(apt-get install openssl)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertPaths:
    return dev_certs(tmp_path_factory.mktemp("wallet-certs"))


@pytest.fixture(scope="module")
def pkpass(certs: DevCertPaths) -> bytes:
    return make_pass(certs)


@pytest.fixture
def unpacked(pkpass: bytes, tmp_path: Path) -> Path:
    return unpack(pkpass, tmp_path / "pass")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    alembic = logging.getLogger("alembic.runtime.migration")
    saved = (root.handlers[:], root.level, alembic.level)
    yield
    root.handlers[:], level, alembic_level = saved
    root.setLevel(level)
    alembic.setLevel(alembic_level)


# -- the manifest ----------------------------------------------------------------------------


@pytest.mark.parametrize("card", CARDS)
def test_manifest_lists_every_file_with_its_sha1(certs: DevCertPaths, card: CardContent) -> None:
    files = zip_members(make_pass(certs, card))
    manifest: dict[str, str] = json.loads(files.pop("manifest.json"))
    assert "signature" in files
    del files["signature"]

    assert set(manifest) == set(files), "the manifest and the zip list different files"
    expected = {"pass.json", *IMAGE_NAMES, *(f"{loc}.lproj/pass.strings" for loc in LOCALES)}
    assert set(files) == expected
    for name, data in files.items():
        assert manifest[name] == sha1(data), f"{name}: wrong SHA-1 in the manifest"
        assert re.fullmatch(r"[0-9a-f]{40}", manifest[name])


# -- the signature ---------------------------------------------------------------------------


def test_signature_verifies_against_the_dev_root(
    openssl: str, unpacked: Path, certs: DevCertPaths
) -> None:
    result = cms_verify(openssl, unpacked, certs.root)

    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


def test_signature_embeds_the_pass_certificate_and_the_intermediate(
    pkpass: bytes, certs: DevCertPaths
) -> None:
    signature = zip_members(pkpass)["signature"]
    embedded = {fingerprint(c) for c in pkcs7.load_der_pkcs7_certificates(signature)}

    assert embedded == {
        fingerprint(load_cert(certs.certificate)),
        fingerprint(load_cert(certs.wwdr)),
    }
    assert fingerprint(load_cert(certs.root)) not in embedded


def test_signature_is_detached_sha256_with_a_signing_time(
    openssl: str, unpacked: Path, certs: DevCertPaths
) -> None:
    printed = run_openssl(
        openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", unpacked / "signature"
    )
    assert printed.returncode == 0, printed.stderr
    text = printed.stdout

    assert "pkcs7-signedData" in text
    assert re.search(r"eContent: <ABSENT>", text), "the manifest must not be inside the signature"
    assert "algorithm: sha256 " in text
    signer = re.search(
        r"signerInfos:.*?issuerAndSerialNumber:\s*issuer: (?P<issuer>[^\n]+)\s*"
        r"serialNumber: (?P<serial>\S+)",
        text,
        re.S,
    )
    assert signer, text
    leaf = load_cert(certs.certificate)
    assert int(signer["serial"], 16) == leaf.serial_number, "the pass certificate signs"
    assert "WWDR" in signer["issuer"]
    signed = re.search(r"object: signingTime \([\d.]+\)\s*set:\s*UTCTIME:(?P<when>[^\n]+)", text)
    assert signed, "no signingTime attribute"
    when = datetime.strptime(signed["when"].strip(), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)
    assert abs(when - datetime.now(UTC)) < SIGNING_CLOCK_SLACK


# -- tampering -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["pass.json", "icon.png", "fr.lproj/pass.strings"], ids=["pass-json", "icon", "strings"]
)
def test_a_changed_file_no_longer_matches_its_manifest_hash(unpacked: Path, name: str) -> None:
    assert manifest_mismatches(unpacked) == set()
    target = unpacked / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))

    assert manifest_mismatches(unpacked) == {name}


def test_a_changed_pass_json_still_leaves_the_manifest_signed(
    openssl: str, unpacked: Path, certs: DevCertPaths
) -> None:
    """The signature covers manifest.json only: the hash check above is what catches this."""
    pass_json = unpacked / "pass.json"
    pass_json.write_bytes(pass_json.read_bytes().replace(b"12345", b"99999", 1))

    assert manifest_mismatches(unpacked) == {"pass.json"}
    assert cms_verify(openssl, unpacked, certs.root).returncode == 0


def _rehash_pass_json(directory: Path) -> None:
    """What a forger does: edit pass.json and put its new hash in the manifest."""
    pass_json = directory / "pass.json"
    pass_json.write_bytes(pass_json.read_bytes().replace(b"12345", b"99999", 1))
    manifest = json.loads((directory / "manifest.json").read_bytes())
    manifest["pass.json"] = sha1(pass_json.read_bytes())
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _flip_a_byte(directory: Path) -> None:
    manifest = directory / "manifest.json"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0x01
    manifest.write_bytes(bytes(data))


def _append_whitespace(directory: Path) -> None:
    manifest = directory / "manifest.json"
    manifest.write_bytes(manifest.read_bytes() + b" ")


@pytest.mark.parametrize(
    "tamper",
    [_rehash_pass_json, _flip_a_byte, _append_whitespace],
    ids=["rehashed-pass-json", "flipped-byte", "trailing-space"],
)
def test_a_changed_manifest_fails_verification(
    openssl: str, unpacked: Path, certs: DevCertPaths, tamper: Any
) -> None:
    tamper(unpacked)

    result = cms_verify(openssl, unpacked, certs.root)

    assert result.returncode != 0
    assert "Verification successful" not in result.stderr


def test_the_signature_of_another_pass_does_not_fit(
    openssl: str, unpacked: Path, certs: DevCertPaths
) -> None:
    other = zip_members(make_pass(certs, FULL, serial=OTHER_SERIAL))
    (unpacked / "signature").write_bytes(other["signature"])

    assert cms_verify(openssl, unpacked, certs.root).returncode != 0


def test_a_pass_from_another_root_fails_against_the_first(
    openssl: str, certs: DevCertPaths, tmp_path: Path
) -> None:
    other_certs = dev_certs(tmp_path / "other-certs")
    foreign = unpack(make_pass(other_certs), tmp_path / "foreign")

    assert cms_verify(openssl, foreign, other_certs.root).returncode == 0, "sanity: own root"
    result = cms_verify(openssl, foreign, certs.root)
    assert result.returncode != 0
    assert "Verification successful" not in result.stderr


def test_credentials_refuse_a_key_of_another_certificate(
    certs: DevCertPaths, tmp_path: Path
) -> None:
    other_certs = dev_certs(tmp_path / "other-certs")

    with pytest.raises(SigningError, match="does not belong"):
        PassCredentials.load(certs.certificate, other_certs.key, certs.wwdr)
    with pytest.raises(SigningError, match="cannot load"):
        PassCredentials.load(certs.certificate, certs.key, tmp_path / "missing-wwdr.pem")


# -- pass.json -------------------------------------------------------------------------------


@pytest.mark.parametrize("card", CARDS)
def test_pass_json_has_every_required_store_card_key(
    certs: DevCertPaths, card: CardContent
) -> None:
    data = json.loads(zip_members(make_pass(certs, card))["pass.json"])

    assert data["formatVersion"] == 1
    assert data["passTypeIdentifier"] == PASS_TYPE_ID
    assert data["serialNumber"] == SERIAL
    assert data["teamIdentifier"] == TEAM_ID
    credentials = PassCredentials.load(certs.certificate, certs.key, certs.wwdr)
    assert data["passTypeIdentifier"] == credentials.pass_type_id(), "must match the certificate"
    assert data["teamIdentifier"] == credentials.team_id(), "must match the certificate"
    assert data["organizationName"] == PROGRAM.organization_name
    assert data["description"]
    store = data["storeCard"]

    (points,) = store["primaryFields"]
    assert points["key"] == "points"
    assert points["value"] == card.balance_points
    assert points["label"] == "POINTS"
    assert points["changeMessage"] == "POINTS_CHANGED"
    (tier,) = store["headerFields"]
    assert (tier["key"], tier["value"], tier["label"]) == ("tier", card.tier_name, "TIER")
    assert tier["changeMessage"] == "TIER_CHANGED"
    for field in all_fields(data):
        if "changeMessage" in field:
            for locale in LOCALES:
                assert "%@" in STRINGS[locale][field["changeMessage"]], (locale, field)

    barcode = data["barcodes"][0]
    assert barcode["format"] == "PKBarcodeFormatQR"
    assert barcode["message"] == card.loyalty_number
    assert barcode["messageEncoding"]
    assert barcode["altText"] == "1234 5678 9012"

    assert data["webServiceURL"] == "https://wallet.example.org/passkit"
    assert data["authenticationToken"] == VAULT.pass_token(SERIAL)
    assert len(data["authenticationToken"]) >= 16


def test_pass_json_field_keys_are_unique_and_colors_are_rgb(pkpass: bytes) -> None:
    data = json.loads(zip_members(pkpass)["pass.json"])

    keys = [field["key"] for field in all_fields(data)]
    assert len(keys) == len(set(keys)), keys
    for name in ("backgroundColor", "foregroundColor", "labelColor"):
        match = _RGB.match(data[name])
        assert match, data[name]
        assert all(0 <= int(part) <= 255 for part in match.groups())
    assert data["backgroundColor"] == "rgb(31, 58, 95)"  # Program's #1f3a5f


def test_expiry_date_is_an_iso_8601_date_with_a_zone(pkpass: bytes) -> None:
    data = json.loads(zip_members(pkpass)["pass.json"])
    (expires,) = [f for f in all_fields(data) if f["key"] == "expires"]

    assert datetime.fromisoformat(expires["value"]) == FULL.expiring_time
    assert datetime.fromisoformat(expires["value"]).tzinfo is not None
    assert expires["dateStyle"] == "PKDateStyleMedium"
    assert expires["timeStyle"] == "PKDateStyleNone"


# -- strings and images ----------------------------------------------------------------------


@pytest.mark.parametrize("card", CARDS)
def test_every_label_and_change_message_is_defined_in_every_language(
    certs: DevCertPaths, card: CardContent
) -> None:
    files = zip_members(make_pass(certs, card))
    used = {
        field[attr]
        for field in all_fields(json.loads(files["pass.json"]))
        for attr in ("label", "changeMessage")
        if attr in field
    }
    assert {"POINTS", "POINTS_CHANGED", "TIER", "TIER_CHANGED"} <= used

    for locale in ("en", "fr", "de"):
        strings = parse_strings(files[f"{locale}.lproj/pass.strings"])
        assert used <= set(strings), f"{locale}: missing {used - set(strings)}"
        assert strings == STRINGS[locale]
        assert all(value.strip() for value in strings.values())


def test_pass_strings_are_translated(pkpass: bytes) -> None:
    files = zip_members(pkpass)
    en, fr, de = (parse_strings(files[f"{loc}.lproj/pass.strings"]) for loc in ("en", "fr", "de"))

    assert en["TIER"] == "Tier"
    assert fr["TIER"] == "Statut"
    assert de["TIER"] == "Status"
    assert fr["NUMBER"] == "Numéro de fidélité"  # UTF-8, not escaped


@pytest.mark.parametrize("name", sorted(ICON_WIDTHS))
def test_icons_are_pngs_of_the_right_size(pkpass: bytes, name: str) -> None:
    width, height = png_size(zip_members(pkpass)[name])

    assert (width, height) == (ICON_WIDTHS[name], ICON_WIDTHS[name])


def test_logos_are_pngs_at_one_two_and_three_times(pkpass: bytes) -> None:
    files = zip_members(pkpass)
    base = png_size(files["logo.png"])

    assert base[0] <= LOGO_MAX_1X[0] and base[1] <= LOGO_MAX_1X[1], base
    assert png_size(files["logo@2x.png"]) == (base[0] * 2, base[1] * 2)
    assert png_size(files["logo@3x.png"]) == (base[0] * 3, base[1] * 3)


# -- coalition wallet dev-certs ---------------------------------------------------------------


def _uid(cert: x509.Certificate) -> str:
    (attribute,) = cert.subject.get_attributes_for_oid(x509.NameOID.USER_ID)
    return str(attribute.value)


@pytest.mark.usefixtures("restore_logging")
def test_dev_certs_command_writes_the_signing_files(
    openssl: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "wallet"
    directory.mkdir()
    (directory / "pass.key").write_bytes(b"old")
    (directory / "pass.key").chmod(0o644)

    code = main(
        [
            "wallet",
            "dev-certs",
            "--dir",
            str(directory),
            "--pass-type-id",
            "pass.org.example.cli",
            "--team-id",
            "CLITEAM001",
        ]
    )

    assert code == 0
    assert {p.name for p in directory.iterdir()} == {
        "pass.pem",
        "pass.key",
        "dev-wwdr.pem",
        "dev-root.pem",
    }
    assert stat.S_IMODE((directory / "pass.key").stat().st_mode) == 0o600
    leaf = load_cert(directory / "pass.pem")
    assert _uid(leaf) == "pass.org.example.cli"
    credentials = PassCredentials.load(
        directory / "pass.pem", directory / "pass.key", directory / "dev-wwdr.pem"
    )
    assert credentials.pass_type_id() == "pass.org.example.cli"
    assert credentials.team_id() == "CLITEAM001"
    chain = run_openssl(
        openssl,
        "verify",
        "-CAfile",
        directory / "dev-root.pem",
        "-untrusted",
        directory / "dev-wwdr.pem",
        directory / "pass.pem",
    )
    assert chain.returncode == 0, chain.stdout + chain.stderr
    out = capsys.readouterr().out
    assert f"COALITION_WALLET_PASS_CERT={directory / 'pass.pem'}" in out


@pytest.mark.usefixtures("restore_logging")
def test_dev_certs_command_defaults_and_signs_verifiable_passes(
    openssl: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "defaults"

    assert main(["wallet", "dev-certs", "--dir", str(directory)]) == 0
    capsys.readouterr()

    paths = DevCertPaths(
        directory / "dev-root.pem",
        directory / "dev-wwdr.pem",
        directory / "pass.pem",
        directory / "pass.key",
    )
    leaf = load_cert(paths.certificate)
    assert _uid(leaf) == PASS_TYPE_ID_DEFAULT
    credentials = PassCredentials.load(paths.certificate, paths.key, paths.wwdr)
    assert credentials.team_id() == TEAM_ID_DEFAULT
    program = Program(pass_type_id=credentials.pass_type_id(), team_id=credentials.team_id())
    signed = unpack(make_pass(paths, program=program), tmp_path / "pass")
    assert cms_verify(openssl, signed, paths.root).returncode == 0
    data = json.loads((signed / "pass.json").read_bytes())
    assert data["passTypeIdentifier"] == PASS_TYPE_ID_DEFAULT
    assert data["teamIdentifier"] == TEAM_ID_DEFAULT
