"""Member notifications: one message to one member, through a channel chosen by URL.

    ""  or  log:                          LogChannel: one log line each (the default)
    file:/var/tmp/mail.jsonl              FileChannel: one JSON object per line (development)
    smtp://user:pass@host:587?from=no-reply@example.com&starttls=true
    smtps://host?from=no-reply@example.com  (implicit TLS, port 465 unless given)

Delivery is at-least-once: the deliverer calls `send` again after a crash or a `ChannelError`,
so a member may get the same notification twice. Mail carries a Message-ID derived from the
event id, which lets mail clients and servers fold such repeats into one.

Errors::

    Exception
     └── ChannelError    the channel could not deliver now; try again later
    ValueError           channel_from_url: a URL that names no usable channel
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

SMTP_TIMEOUT_S_DEFAULT = 30.0
"""For connecting and for each SMTP command's answer."""
SMTP_PORT = 25
SMTP_SUBMISSION_PORT = 587
"""RFC 6409 message submission, where STARTTLS is the norm."""
SMTPS_PORT = 465
"""RFC 8314 submission over implicit TLS."""
MESSAGE_ID_DOMAIN = "coalition"

log = logging.getLogger("coalition.notify")


@dataclass(frozen=True)
class Notification:
    event_id: str
    """The outbox event's id: the same notification always has the same id."""
    to_email: str
    to_name: str
    subject: str
    text: str
    """Plain text body."""


class ChannelError(Exception):
    """The notification was not delivered; the deliverer tries again later."""


class Channel(Protocol):
    name: str
    """"log", "file" or "smtp": for logs and delivery records."""

    async def send(self, notification: Notification) -> None:
        """Deliver, or raise ChannelError."""
        ...


# -- log ---------------------------------------------------------------------------------------


def masked(email: str) -> str:
    """ "ada@example.com" -> "a**@example.com": enough to tell recipients apart in a log."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}{'*' * max(len(local) - 1, 1)}{at}{domain}"


class LogChannel:
    """One INFO line per notification, with neither the text nor the full address: logs are
    kept longer than mail and read by more people."""

    name = "log"

    async def send(self, notification: Notification) -> None:
        log.info(
            "notification %s to %s: %s",
            notification.event_id,
            masked(notification.to_email),
            notification.subject,
        )


# -- file --------------------------------------------------------------------------------------


class FileChannel:
    """Appends one JSON object per line to a file, for development: read it to see the mail.

    Each line is written with a single write and fsync'ed before `send` returns, so a delivery
    that the deliverer records as done survives a crash of the machine.
    """

    name = "file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # writes run in worker threads: one line at a time

    async def send(self, notification: Notification) -> None:
        line = json.dumps(
            {
                "event_id": notification.event_id,
                "to": notification.to_email,
                "to_name": notification.to_name,
                "subject": notification.subject,
                "text": notification.text,
                "time": datetime.now(UTC).isoformat(),
            },
            ensure_ascii=False,
        )
        try:
            await asyncio.to_thread(self._append, (line + "\n").encode())
        except OSError as exc:
            raise ChannelError(f"cannot write {self.path}: {exc}") from exc

    def _append(self, data: bytes) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)


# -- SMTP --------------------------------------------------------------------------------------


class SmtpChannel:
    """Mail through an SMTP server (a relay or a provider's submission port)."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        username: str = "",
        password: str = "",
        use_tls: bool = False,
        starttls: bool = False,
        timeout_s: float = SMTP_TIMEOUT_S_DEFAULT,
    ) -> None:
        if use_tls and starttls:
            raise ValueError("use either implicit TLS (use_tls) or STARTTLS, not both")
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.use_tls = use_tls
        self.starttls = starttls
        self.timeout_s = timeout_s

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = formataddr((notification.to_name, notification.to_email))
        message["Subject"] = notification.subject
        message["Date"] = formatdate(usegmt=True)
        # The same event always gets the same Message-ID, so a repeat is recognisably a repeat.
        message["Message-ID"] = f"<{notification.event_id}@{MESSAGE_ID_DOMAIN}>"
        message.set_content(notification.text)
        return message

    async def send(self, notification: Notification) -> None:
        try:
            message = self.message(notification)
        except ValueError as exc:  # a header with a line break, which no retry will fix
            raise ChannelError(f"cannot build the message: {exc}") from exc
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username or None,
                password=self.password or None,
                use_tls=self.use_tls,
                # False, not None: aiosmtplib's None upgrades whenever the server offers it.
                start_tls=self.starttls,
                timeout=self.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ChannelError(f"smtp {self.host}:{self.port}: {exc}") from exc


# -- configuration -----------------------------------------------------------------------------


def _file_channel(path: str, netloc: str) -> FileChannel:
    if netloc not in ("", "localhost"):
        raise ValueError(f"file: notification URLs name a local path, not a host ({netloc!r})")
    if not path:
        raise ValueError('file: notification URL without a path (e.g. "file:/tmp/mail.jsonl")')
    return FileChannel(unquote(path))


def _flag(query: dict[str, list[str]], key: str) -> bool:
    value = query.pop(key, ["false"])[-1].lower()
    if value not in ("true", "false"):
        raise ValueError(f"{key}= in the notification URL must be true or false, not {value!r}")
    return value == "true"


def _smtp_channel(url: str) -> SmtpChannel:
    # Error messages name the part at fault, never the URL: it may hold a password.
    parts = urlsplit(url)
    implicit_tls = parts.scheme == "smtps"
    query = parse_qs(parts.query, keep_blank_values=True)
    sender = query.pop("from", [""])[-1].strip()
    if "@" not in sender:
        raise ValueError(
            "the SMTP notification URL needs the sender's address: add ?from=no-reply@example.com"
        )
    starttls = _flag(query, "starttls")
    if query:
        raise ValueError(f"unknown SMTP notification URL parameters: {', '.join(sorted(query))}")
    if implicit_tls and starttls:
        raise ValueError("smtps: is implicit TLS already; starttls=true is for smtp:")
    if not parts.hostname:
        raise ValueError("the SMTP notification URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the SMTP notification URL has an invalid port") from None
    default_port = SMTPS_PORT if implicit_tls else SMTP_SUBMISSION_PORT if starttls else SMTP_PORT
    return SmtpChannel(
        parts.hostname,
        port or default_port,
        sender,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        use_tls=implicit_tls,
        starttls=starttls,
    )


def channel_from_url(url: str) -> Channel:
    """The channel a URL names (see the module docstring); raises ValueError."""
    url = url.strip()
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if not url:
        return LogChannel()
    if scheme == "log" and colon:
        if rest not in ("", "//"):
            raise ValueError(f"log: takes no path or parameters, not {rest!r}")
        return LogChannel()
    if not colon:
        raise ValueError(f"not a notification URL: {url!r} (try log:, file:PATH or smtp://)")
    if scheme == "file":
        parts = urlsplit(url)
        return _file_channel(parts.path, parts.netloc)
    if scheme in ("smtp", "smtps"):
        return _smtp_channel(url)
    raise ValueError(
        f"unknown notification channel {scheme!r}: use log:, file:PATH, smtp:// or smtps://"
    )
