"""Wallet commands, and the wallet a serving gateway loads.

coalition wallet dev-certs [--dir D] [--pass-type-id ID] [--team-id T]
coalition wallet update          bring every marked card up to date and push it, then exit
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.clock import SystemClock
from gateway.config import env
from gateway.service.context import AppContext
from wallet.adapters.devcerts import make_dev_certs
from wallet.config import PASS_TYPE_ID_DEFAULT, TEAM_ID_DEFAULT, Wallet, load_wallet
from wallet.domain.card import WalletConfigError
from wallet.service.updates import CardUpdater

WALLET_DIR_DEFAULT = "coalition-wallet"
"""Where `dev-certs` writes, and where a gateway with no certificate paths configured looks."""

Command = Callable[[AppContext, argparse.Namespace], Awaitable[int]]


class WalletSetupError(Exception):
    pass


def wallet_dir() -> Path:
    return Path(env("WALLET_DIR", WALLET_DIR_DEFAULT))


def open_wallet(web_url_default: str, make_dev_certs_if_missing: bool = False) -> Wallet:
    """The deployment's wallet from the environment. With make_dev_certs_if_missing (the demo),
    a gateway with no certificates configured gets development ones in COALITION_WALLET_DIR."""
    directory = wallet_dir()
    configured = env("WALLET_PASS_CERT") or env("WALLET_PASS_KEY") or env("WALLET_WWDR_CERT")
    if make_dev_certs_if_missing and not configured and not (directory / "pass.pem").exists():
        make_dev_certs(
            directory,
            env("WALLET_PASS_TYPE_ID", PASS_TYPE_ID_DEFAULT),
            env("WALLET_TEAM_ID", TEAM_ID_DEFAULT),
            SystemClock().now(),
        )
    try:
        return load_wallet(web_url_default, directory)
    except WalletConfigError as exc:
        raise WalletSetupError(f"wallet settings: {exc}") from None


def _dev_certs(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else wallet_dir()
    paths = make_dev_certs(directory, args.pass_type_id, args.team_id, SystemClock().now())
    print(f"wrote development pass signing files to {directory}/ (keep pass.key private)")
    print("a gateway started in this directory finds them; elsewhere set:")
    print(f"  COALITION_WALLET_PASS_CERT={paths.certificate}")
    print(f"  COALITION_WALLET_PASS_KEY={paths.key}")
    print(f"  COALITION_WALLET_WWDR_CERT={paths.wwdr}")
    print(f"verify a pass with: openssl cms -verify -CAfile {paths.root} ... (docs/wallet.md)")
    return 0


async def _update(ctx: AppContext, args: argparse.Namespace) -> int:
    wallet = open_wallet(env("WALLET_URL", "http://127.0.0.1:8080"))
    try:
        updater = CardUpdater(ctx, wallet)
        cards = pushes = gone = failed = 0
        while True:
            done = await updater.run_once()
            cards, pushes = cards + done.cards, pushes + done.pushes
            gone, failed = gone + done.gone, failed + done.failed
            if done.cards == 0:
                break
    finally:
        await wallet.aclose()
    print(
        f"{cards} cards checked, {pushes} pushes sent, {gone} dead tokens dropped, "
        f"{failed} to retry"
    )
    return 0


def add_commands(
    sub: Any,
    with_db: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    with_context: Callable[[Command], Callable[[argparse.Namespace], Awaitable[int]]],
) -> None:
    wallet = sub.add_parser("wallet", help="wallet cards").add_subparsers(
        dest="wallet", required=True
    )
    certs = wallet.add_parser(
        "dev-certs", help="make a development root, WWDR-like intermediate and pass certificate"
    )
    certs.add_argument("--dir", help=f"default: $COALITION_WALLET_DIR or {WALLET_DIR_DEFAULT}")
    certs.add_argument("--pass-type-id", default=PASS_TYPE_ID_DEFAULT)
    certs.add_argument("--team-id", default=TEAM_ID_DEFAULT)
    certs.set_defaults(run=_dev_certs)
    with_db(
        wallet.add_parser("update", help="bring marked cards up to date and push them, once")
    ).set_defaults(run=with_context(_update))
