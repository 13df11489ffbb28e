"""Wallet cards (Apple Wallet, Google Wallet) and the PassKit web service: coming next."""
