"""Wallet settings from the environment (COALITION_WALLET_*, COALITION_APNS_*,
COALITION_GOOGLE_WALLET_*) and the clients they open.

Apple needs the pass type certificate, its key and Apple's WWDR intermediate; Google needs a
service account key file and the issuer id. Either may be missing: the card is then issued for
the other only, and IssueWalletCard answers WALLET_NOT_CONFIGURED when neither is set up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from wallet.adapters.apns import APNS_URL_DEFAULT, ApnsClient, tls_context
from wallet.adapters.google import (
    GOOGLE_API_URL_DEFAULT,
    GoogleConfigError,
    GoogleWalletClient,
    ServiceAccount,
)
from wallet.adapters.pkpass import ASSETS_DIR_DEFAULT, PassCredentials, SigningError, load_images
from wallet.domain.card import Program, WalletConfigError

PASS_TYPE_ID_DEFAULT = "pass.org.example.coalition"
TEAM_ID_DEFAULT = "DEVTEAM001"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"COALITION_{name}", default)


@dataclass
class Apple:
    credentials: PassCredentials
    apns: ApnsClient


@dataclass
class Google:
    client: GoogleWalletClient
    origins: tuple[str, ...]


@dataclass
class Wallet:
    """The deployment's wallet: the program, and the Apple and Google sides that are set up."""

    program: Program
    apple: Apple | None = None
    google: Google | None = None
    images: dict[str, bytes] = field(default_factory=lambda: load_images(ASSETS_DIR_DEFAULT))
    """Icon and logo at 1x-3x: in every pass, and Google's program logo (/cards/assets)."""
    notes: list[str] = field(default_factory=list)
    """What is not set up, for the startup log."""

    @property
    def configured(self) -> bool:
        return self.apple is not None or self.google is not None

    async def aclose(self) -> None:
        if self.apple is not None:
            await self.apple.apns.aclose()
        if self.google is not None:
            await self.google.client.aclose()


def load_wallet(web_url_default: str, cert_dir_default: Path | None = None) -> Wallet:
    """From the environment. cert_dir_default: where `coalition wallet dev-certs` wrote its
    files, used when no certificate paths are configured (the demo)."""
    cert = _env("WALLET_PASS_CERT")
    key = _env("WALLET_PASS_KEY")
    wwdr = _env("WALLET_WWDR_CERT")
    if not (cert or key or wwdr) and cert_dir_default is not None:
        candidates = [cert_dir_default / n for n in ("pass.pem", "pass.key", "dev-wwdr.pem")]
        if all(p.exists() for p in candidates):
            cert, key, wwdr = (str(p) for p in candidates)
    credentials = None
    notes: list[str] = []
    if cert or key or wwdr:
        if not (cert and key and wwdr):
            raise WalletConfigError(
                "Apple Wallet needs COALITION_WALLET_PASS_CERT, COALITION_WALLET_PASS_KEY and "
                "COALITION_WALLET_WWDR_CERT together"
            )
        try:
            credentials = PassCredentials.load(
                Path(cert), Path(key), Path(wwdr), _env("WALLET_PASS_KEY_PASSWORD")
            )
        except SigningError as exc:
            raise WalletConfigError(str(exc)) from None
    else:
        notes.append("Apple Wallet is off (no pass certificate; see `coalition wallet dev-certs`)")
    pass_type_id = _env("WALLET_PASS_TYPE_ID") or (
        credentials.pass_type_id() if credentials else ""
    )
    issuer_id = _env("GOOGLE_WALLET_ISSUER_ID")
    program = Program(
        organization_name=_env("WALLET_ORGANIZATION", "Coalition"),
        program_name=_env("WALLET_PROGRAM_NAME", "Coalition Rewards"),
        pass_type_id=pass_type_id or PASS_TYPE_ID_DEFAULT,
        team_id=_env("WALLET_TEAM_ID")
        or (credentials.team_id() if credentials else "")
        or TEAM_ID_DEFAULT,
        web_url=_env("WALLET_URL", web_url_default),
        google_issuer_id=issuer_id,
    )
    try:
        images = load_images(Path(_env("WALLET_ASSETS_DIR") or ASSETS_DIR_DEFAULT))
    except SigningError as exc:
        raise WalletConfigError(str(exc)) from None
    # Everything is checked before any client opens, so a bad setting leaks no connection.
    tls = None
    if credentials is not None:
        apns_ca = _env("APNS_CA_FILE")
        try:
            tls = tls_context(Path(cert), Path(key), Path(apns_ca) if apns_ca else None)
        except (OSError, ValueError) as exc:
            raise WalletConfigError(f"Apple Wallet: {exc}") from None
    key_file = _env("GOOGLE_WALLET_KEY_FILE")
    account = None
    if key_file and issuer_id:
        try:
            account = ServiceAccount.from_file(Path(key_file))
        except GoogleConfigError as exc:
            raise WalletConfigError(str(exc)) from None
    elif key_file or issuer_id:
        raise WalletConfigError(
            "Google Wallet needs COALITION_GOOGLE_WALLET_KEY_FILE and "
            "COALITION_GOOGLE_WALLET_ISSUER_ID together"
        )
    else:
        notes.append("Google Wallet is off (no service account key and issuer id)")
    wallet = Wallet(program, notes=notes, images=images)
    if credentials is not None and tls is not None:
        wallet.apple = Apple(credentials, ApnsClient(_env("APNS_URL", APNS_URL_DEFAULT), tls))
    if account is not None:
        origins = _env("GOOGLE_WALLET_ORIGINS") or _origin(program.web_url)
        wallet.google = Google(
            GoogleWalletClient(account, _env("GOOGLE_WALLET_API_URL", GOOGLE_API_URL_DEFAULT)),
            tuple(o.strip() for o in origins.split(",") if o.strip()),
        )
    return wallet


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
