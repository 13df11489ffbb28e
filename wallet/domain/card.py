"""What a wallet card shows, and the Apple and Google documents built from it. Pure Python.

A card is a member's loyalty card: name, loyalty number (as a QR code), points balance, tier and
the next expiry. Its content is rebuilt from the ledger whenever it may have changed; the card
is "updated" only when the content differs, so a device is pushed once per visible change.

References: Apple's Wallet Passes (pass.json keys, storeCard style, pass.strings), Google Wallet
REST API (LoyaltyClass, LoyaltyObject) and "Add to Google Wallet" JWT (typ savetowallet).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

CARD_NAME_SUFFIX = "/walletCard"
SERIAL_BYTES = 16
"""Random bytes in a serial number (hex): unguessable, though the token is what protects it."""
PARTNERS_SHOWN_MAX = 20
"""Partners listed on the back of the card."""
LOCALES = ("en", "fr", "de")
"""Languages the Apple pass carries strings for (pass.strings in {locale}.lproj)."""
PASS_TYPE_ID_CHARS_MAX = 120
"""As stored (wallet_cards.pass_type_id)."""
PKPASS_MIME = "application/vnd.apple.pkpass"
GOOGLE_SAVE_URL = "https://pay.google.com/gp/v/save/"

_SERIAL = re.compile(r"^[0-9a-f]{32}$")
_PASS_TYPE_ID = re.compile(r"^pass\.[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_GOOGLE_ID_PART = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class WalletConfigError(ValueError):
    """The wallet program settings are not usable."""


@dataclass(frozen=True)
class Program:
    """How the deployment's cards look and where their services live."""

    organization_name: str = "Coalition"
    program_name: str = "Coalition Rewards"
    pass_type_id: str = "pass.org.example.coalition"
    team_id: str = "DEVTEAM001"
    web_url: str = "http://127.0.0.1:8080"
    """Public base URL of the wallet web service (Apple requires https in production)."""
    background_color: str = "#1f3a5f"
    foreground_color: str = "#ffffff"
    label_color: str = "#c9d6e8"
    google_issuer_id: str = ""
    """Google Wallet issuer id; empty when Google Wallet is not set up."""
    google_class_suffix: str = "coalition-loyalty"

    def __post_init__(self) -> None:
        if not is_pass_type_id(self.pass_type_id):
            raise WalletConfigError(
                f"pass type id {self.pass_type_id!r} must look like pass.com.example.card"
            )
        if not re.fullmatch(r"[A-Z0-9]{10}", self.team_id):
            raise WalletConfigError(f"team id {self.team_id!r} must be 10 letters or digits")
        if not self.web_url.startswith(("https://", "http://")):
            raise WalletConfigError(f"web URL {self.web_url!r} must be http(s)://")
        for color in (self.background_color, self.foreground_color, self.label_color):
            if not _HEX_COLOR.fullmatch(color):
                raise WalletConfigError(f"color {color!r} must be #rrggbb")
        if self.google_issuer_id and not (
            self.google_issuer_id.isascii() and self.google_issuer_id.isdigit()
        ):
            raise WalletConfigError("the Google issuer id is a number")
        if not _GOOGLE_ID_PART.fullmatch(self.google_class_suffix):
            raise WalletConfigError("the Google class suffix allows letters, digits, . _ -")

    @property
    def passkit_url(self) -> str:
        """webServiceURL: Apple appends /v1/devices/..., /v1/passes/..., /v1/log."""
        return f"{self.web_url.rstrip('/')}/passkit"

    @property
    def google_class_id(self) -> str:
        return f"{self.google_issuer_id}.{self.google_class_suffix}"

    def google_object_id(self, serial_number: str) -> str:
        return f"{self.google_issuer_id}.{serial_number}" if self.google_issuer_id else ""

    def card_page_url(self, serial_number: str, token: str) -> str:
        return f"{self.web_url.rstrip('/')}/cards/{serial_number}?token={token}"


@dataclass(frozen=True)
class CardContent:
    """Everything a card shows. Equal content means an unchanged card."""

    member_name: str
    loyalty_number: str
    locale: str
    balance_points: int
    tier_code: str
    tier_name: str
    next_tier_name: str
    """Empty at the top tier."""
    points_to_next_tier: int
    expiring_points: int
    expiring_time: datetime | None
    partners: tuple[str, ...]
    """Display names of the partners where members earn and spend, for the back of the card."""

    def to_json(self) -> str:
        data = asdict(self)
        data["expiring_time"] = self.expiring_time.isoformat() if self.expiring_time else None
        data["partners"] = list(self.partners)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> CardContent:
        data = json.loads(raw)
        when = data.pop("expiring_time")
        return cls(
            **{**data, "partners": tuple(data["partners"])},
            expiring_time=datetime.fromisoformat(when) if when else None,
        )


def is_pass_type_id(text: str) -> bool:
    return len(text) <= PASS_TYPE_ID_CHARS_MAX and bool(_PASS_TYPE_ID.fullmatch(text))


def is_serial_number(text: str) -> bool:
    return bool(_SERIAL.fullmatch(text))


def card_name(member_id: str) -> str:
    return f"members/{member_id}{CARD_NAME_SUFFIX}"


def formatted_number(loyalty_number: str) -> str:
    """ "123456789012" -> "1234 5678 9012": how the number is printed under the barcode."""
    return " ".join(loyalty_number[i : i + 4] for i in range(0, len(loyalty_number), 4))


# -- Apple ------------------------------------------------------------------------------------

# Labels and change messages are keys into pass.strings; Wallet shows the device's language.
# "%@" in a change message is replaced by the field's new value (Apple: changeMessage).
STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "POINTS": "Points",
        "POINTS_CHANGED": "Your balance is now %@ points.",
        "MEMBER": "Member",
        "TIER": "Tier",
        "TIER_CHANGED": "Your tier is now %@.",
        "EXPIRING": "Expiring",
        "EXPIRING_CHANGED": "%@ points are due to expire.",
        "EXPIRES": "Expires on",
        "NUMBER": "Loyalty number",
        "NEXT_TIER": "Points to the next tier",
        "PARTNERS": "Earn and spend at",
        "DESCRIPTION": "Loyalty card",
        "ADD_APPLE": "Add to Apple Wallet",
        "SAVE_GOOGLE": "Save to Google Wallet",
        "PAGE_FOOTER": "Keep this link private: it opens your card.",
    },
    "fr": {
        "POINTS": "Points",
        "POINTS_CHANGED": "Votre solde est maintenant de %@ points.",
        "MEMBER": "Membre",
        "TIER": "Statut",
        "TIER_CHANGED": "Votre statut est maintenant %@.",
        "EXPIRING": "Expirent",
        "EXPIRING_CHANGED": "%@ points vont expirer.",
        "EXPIRES": "Expirent le",
        "NUMBER": "Numéro de fidélité",
        "NEXT_TIER": "Points avant le statut suivant",
        "PARTNERS": "Cumulez et utilisez chez",
        "DESCRIPTION": "Carte de fidélité",
        "ADD_APPLE": "Ajouter à Apple Wallet",
        "SAVE_GOOGLE": "Enregistrer dans Google Wallet",
        "PAGE_FOOTER": "Gardez ce lien pour vous : il ouvre votre carte.",
    },
    "de": {
        "POINTS": "Punkte",
        "POINTS_CHANGED": "Ihr Punktestand beträgt jetzt %@ Punkte.",
        "MEMBER": "Mitglied",
        "TIER": "Status",
        "TIER_CHANGED": "Ihr Status ist jetzt %@.",
        "EXPIRING": "Verfallen",
        "EXPIRING_CHANGED": "%@ Punkte verfallen bald.",
        "EXPIRES": "Verfallen am",
        "NUMBER": "Mitgliedsnummer",
        "NEXT_TIER": "Punkte bis zum nächsten Status",
        "PARTNERS": "Punkte sammeln und einlösen bei",
        "DESCRIPTION": "Kundenkarte",
        "ADD_APPLE": "Zu Apple Wallet hinzufügen",
        "SAVE_GOOGLE": "In Google Wallet speichern",
        "PAGE_FOOTER": "Behalten Sie diesen Link für sich: Er öffnet Ihre Karte.",
    },
}


def language(locale: str) -> str:
    """The member's language among LOCALES ("fr-CA" -> "fr"), English when we have none."""
    lang = locale.split("-")[0].lower()
    return lang if lang in STRINGS else "en"


def strings_for(locale: str) -> dict[str, str]:
    return STRINGS[language(locale)]


def pass_strings(locale: str) -> bytes:
    """{locale}.lproj/pass.strings: `"KEY" = "text";` lines, UTF-8 (Apple accepts UTF-8 and
    UTF-16 strings files)."""

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [f"{quoted(key)} = {quoted(text)};" for key, text in sorted(STRINGS[locale].items())]
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class PassField:
    key: str
    label: str
    value: str | int
    change_message: str = ""
    date: bool = False
    """An ISO 8601 value Wallet shows as a date (dateStyle medium, no time)."""
    number: bool = False


@dataclass(frozen=True)
class PassLayout:
    """The storeCard's fields, by area; the adapter turns them into pass.json."""

    header: tuple[PassField, ...]
    primary: tuple[PassField, ...]
    secondary: tuple[PassField, ...]
    auxiliary: tuple[PassField, ...]
    back: tuple[PassField, ...]
    barcode_message: str
    barcode_alt_text: str


def pass_layout(content: CardContent, program: Program) -> PassLayout:
    auxiliary: list[PassField] = [
        PassField(
            "expiring",
            "EXPIRING",
            content.expiring_points,
            change_message="EXPIRING_CHANGED",
            number=True,
        )
    ]
    if content.expiring_time is not None and content.expiring_points > 0:
        auxiliary.append(
            PassField("expires", "EXPIRES", content.expiring_time.isoformat(), date=True)
        )
    back = [PassField("number", "NUMBER", formatted_number(content.loyalty_number))]
    if content.next_tier_name:
        back.append(
            PassField(
                "nextTier",
                "NEXT_TIER",
                f"{content.points_to_next_tier} → {content.next_tier_name}",
            )
        )
    if content.partners:
        back.append(PassField("partners", "PARTNERS", "\n".join(content.partners)))
    return PassLayout(
        header=(PassField("tier", "TIER", content.tier_name, change_message="TIER_CHANGED"),),
        primary=(
            PassField(
                "points",
                "POINTS",
                content.balance_points,
                change_message="POINTS_CHANGED",
                number=True,
            ),
        ),
        secondary=(PassField("member", "MEMBER", content.member_name),),
        auxiliary=tuple(auxiliary),
        back=tuple(back),
        barcode_message=content.loyalty_number,
        barcode_alt_text=formatted_number(content.loyalty_number),
    )


# -- Google -----------------------------------------------------------------------------------


def loyalty_class(program: Program, logo_url: str) -> dict[str, Any]:
    """The program's LoyaltyClass (one per deployment)."""
    return {
        "id": program.google_class_id,
        "issuerName": program.organization_name,
        "programName": program.program_name,
        "programLogo": {
            "sourceUri": {"uri": logo_url},
            "contentDescription": {
                "defaultValue": {"language": "en-US", "value": program.program_name}
            },
        },
        "hexBackgroundColor": program.background_color,
        "reviewStatus": "UNDER_REVIEW",
    }


def loyalty_fields(content: CardContent) -> dict[str, Any]:
    """The LoyaltyObject fields that change with the member's standing (what updates PATCH)."""
    modules = [{"id": "tier", "header": "Tier", "body": content.tier_name}]
    if content.expiring_points > 0 and content.expiring_time is not None:
        modules.append(
            {
                "id": "expiring",
                "header": "Expiring",
                "body": f"{content.expiring_points} points on "
                f"{content.expiring_time.date().isoformat()}",
            }
        )
    return {
        "accountName": content.member_name,
        "loyaltyPoints": {"label": "Points", "balance": {"int": content.balance_points}},
        "textModulesData": modules,
    }


def loyalty_object(program: Program, serial_number: str, content: CardContent) -> dict[str, Any]:
    """The member's LoyaltyObject."""
    return {
        "id": program.google_object_id(serial_number),
        "classId": program.google_class_id,
        "state": "ACTIVE",
        "accountId": content.loyalty_number,
        "barcode": {
            "type": "QR_CODE",
            "value": content.loyalty_number,
            "alternateText": formatted_number(content.loyalty_number),
        },
        **loyalty_fields(content),
    }


def save_claims(
    issuer_email: str,
    origins: tuple[str, ...],
    loyalty_object_: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The claims of a "Save to Google Wallet" JWT (signed RS256 by the service account).

    The class is created through the REST API (once per program), not carried here: Google
    caps links at about 1,800 characters. The object is carried whole, so a save works even
    before the updater has created it; once it exists Google keeps its own, current copy."""
    return {
        "iss": issuer_email,
        "aud": "google",
        "typ": "savetowallet",
        "iat": int(now.timestamp()),
        "origins": list(origins),
        "payload": {"loyaltyObjects": [loyalty_object_]},
    }
