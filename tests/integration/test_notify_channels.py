"""Member notification channels against real files, real logs and a real SMTP server
(aiosmtpd, in this process, on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.adapters.notify import (
    ChannelError,
    FileChannel,
    LogChannel,
    Notification,
    SmtpChannel,
    channel_from_url,
    masked,
)

NOTE = Notification(
    event_id="0123456789abcdef01234567",
    to_email="ada@example.com",
    to_name="Ada Lovelace",
    subject="Your voucher: Free night",
    text="Hi Ada,\n\nCode: ABCD-EFGH-JKMN-PQR7\n",
)
SENDER = "no-reply@coalition.example"
SMTP_USER = "relay user"
SMTP_PASSWORD = "p@ss:w/rd"
SHORT_TIMEOUT_S = 2.0


def free_port() -> int:
    """A port nothing listens on: bound, read, and released at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- log ---------------------------------------------------------------------------------------


async def test_log_channel_logs_who_and_what_but_not_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="coalition.notify"):
        await LogChannel().send(NOTE)
    [record] = caplog.records
    assert record.name == "coalition.notify"
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert NOTE.event_id in message
    assert NOTE.to_email not in message  # personal data: masked
    assert masked(NOTE.to_email) in message and "@" in masked(NOTE.to_email)
    assert NOTE.subject in message
    assert "ABCD-EFGH-JKMN-PQR7" not in message  # a voucher code is as good as money


# -- file --------------------------------------------------------------------------------------


async def test_file_channel_appends_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dirs" / "mail.jsonl"
    channel = FileChannel(path)
    second = Notification("e2", "bob@example.com", "", "Hello", "Hello,\n")

    await channel.send(NOTE)
    await channel.send(second)

    first_line, second_line = path.read_text().splitlines()
    first = json.loads(first_line)
    assert first | {"time": "-"} == {
        "event_id": NOTE.event_id,
        "to": NOTE.to_email,
        "to_name": NOTE.to_name,
        "subject": NOTE.subject,
        "text": NOTE.text,
        "time": "-",
    }
    assert first["time"].endswith("+00:00")
    assert json.loads(second_line)["event_id"] == "e2"


async def test_file_channel_keeps_lines_whole_under_concurrent_sends(tmp_path: Path) -> None:
    path = tmp_path / "mail.jsonl"
    channel = FileChannel(path)
    notes = [Notification(f"e{i}", "a@example.com", "", "s", "x" * 10_000) for i in range(20)]

    await asyncio.gather(*(channel.send(note) for note in notes))

    ids = sorted(json.loads(line)["event_id"] for line in path.read_text().splitlines())
    assert ids == sorted(note.event_id for note in notes)


async def test_file_channel_write_failure_is_a_channel_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ChannelError, match="cannot write"):
        await FileChannel(blocker / "mail.jsonl").send(NOTE)


# -- SMTP --------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What an SMTP server accepted."""

    port: int = 0
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        # handled=False: aiosmtpd sends the 535 itself.
        return AuthResult(success=login == (SMTP_USER, SMTP_PASSWORD), handled=False)

    def message(self, index: int = 0) -> EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        # AUTH without TLS is fine on loopback in a test; the gateway's URLs can use TLS.
        lambda: SMTP(box, authenticator=box.authenticate, auth_require_tls=False),
        "127.0.0.1",
        0,
    )
    box.port = server.sockets[0].getsockname()[1]
    yield box
    server.close()
    await server.wait_closed()


def smtp(mailbox: Mailbox, **options: Any) -> SmtpChannel:
    return SmtpChannel("127.0.0.1", mailbox.port, SENDER, timeout_s=SHORT_TIMEOUT_S, **options)


async def test_smtp_channel_delivers_to_the_member(mailbox: Mailbox) -> None:
    await smtp(mailbox).send(NOTE)

    [envelope] = mailbox.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == [NOTE.to_email]
    message = mailbox.message()
    assert message["From"] == SENDER
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Subject"] == NOTE.subject
    assert message["Date"]
    assert message.get_content().replace("\r\n", "\n") == NOTE.text  # CRLF on the wire


async def test_a_repeat_has_the_same_message_id(mailbox: Mailbox) -> None:
    """At-least-once delivery may send twice; the Message-ID lets mail software fold repeats."""
    channel = smtp(mailbox)
    await channel.send(NOTE)
    await channel.send(NOTE)

    ids = [mailbox.message(i)["Message-ID"] for i in range(2)]
    assert ids == [f"<{NOTE.event_id}@coalition>"] * 2


async def test_smtp_channel_logs_in_with_the_decoded_url_credentials(mailbox: Mailbox) -> None:
    url = f"smtp://relay%20user:p%40ss%3Aw%2Frd@127.0.0.1:{mailbox.port}?from={SENDER}"
    channel = channel_from_url(url)
    await channel.send(NOTE)

    assert mailbox.logins == [(SMTP_USER, SMTP_PASSWORD)]
    assert len(mailbox.envelopes) == 1


async def test_rejected_credentials_are_a_channel_error(mailbox: Mailbox) -> None:
    with pytest.raises(ChannelError, match=r"^smtp 127\.0\.0\.1:\d+: .*535"):
        await smtp(mailbox, username=SMTP_USER, password="wrong").send(NOTE)
    assert mailbox.envelopes == []


async def test_nothing_listening_is_a_channel_error() -> None:
    channel = SmtpChannel("127.0.0.1", free_port(), SENDER, timeout_s=SHORT_TIMEOUT_S)
    with pytest.raises(ChannelError, match=r"^smtp 127\.0\.0\.1:\d+: "):
        await channel.send(NOTE)


async def test_a_header_with_a_line_break_is_a_channel_error(mailbox: Mailbox) -> None:
    note = Notification(NOTE.event_id, NOTE.to_email, NOTE.to_name, "a\r\nBcc: x@y", NOTE.text)
    with pytest.raises(ChannelError, match="cannot build"):
        await smtp(mailbox).send(note)
    assert mailbox.envelopes == []


# -- channel_from_url --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("", id="empty"),
        pytest.param("log:", id="log"),
        pytest.param("LOG://", id="log-slashes"),
        pytest.param("  log:  ", id="spaces"),
    ],
)
def test_log_urls(url: str) -> None:
    channel = channel_from_url(url)
    assert isinstance(channel, LogChannel)
    assert channel.name == "log"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        pytest.param("file:/var/tmp/mail.jsonl", "/var/tmp/mail.jsonl", id="absolute"),
        pytest.param("file:///var/tmp/mail.jsonl", "/var/tmp/mail.jsonl", id="triple-slash"),
        pytest.param("file://localhost/var/mail.jsonl", "/var/mail.jsonl", id="localhost"),
        pytest.param("file:relative.jsonl", "relative.jsonl", id="relative"),
        pytest.param("file:/tmp/my%20mail.jsonl", "/tmp/my mail.jsonl", id="escaped"),
    ],
)
def test_file_urls(url: str, path: str) -> None:
    channel = channel_from_url(url)
    assert isinstance(channel, FileChannel)
    assert (channel.name, channel.path) == ("file", Path(path))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "smtp://mail.example?from=a@b.example",
            ("mail.example", 25, "a@b.example", "", "", False, False),
            id="plain-default-port",
        ),
        pytest.param(
            "smtp://u:p@mail.example?from=a@b.example&starttls=true",
            ("mail.example", 587, "a@b.example", "u", "p", False, True),
            id="starttls-submission-port",
        ),
        pytest.param(
            "smtps://u%40x:p%2Fq@mail.example?from=a@b.example",
            ("mail.example", 465, "a@b.example", "u@x", "p/q", True, False),
            id="implicit-tls-decoded-credentials",
        ),
        pytest.param(
            "smtp://mail.example:2525?from=a%40b.example&starttls=false",
            ("mail.example", 2525, "a@b.example", "", "", False, False),
            id="explicit-port",
        ),
        pytest.param(
            "smtp://user@mail.example?from=a@b.example",
            ("mail.example", 25, "a@b.example", "user", "", False, False),
            id="user-without-password",
        ),
    ],
)
def test_smtp_urls(url: str, expected: tuple[object, ...]) -> None:
    channel = channel_from_url(url)
    assert isinstance(channel, SmtpChannel)
    assert channel.name == "smtp"
    assert (
        channel.host,
        channel.port,
        channel.sender,
        channel.username,
        channel.password,
        channel.use_tls,
        channel.starttls,
    ) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("smtp://mail.example", "add \\?from=", id="no-from"),
        pytest.param("smtp://mail.example?from=", "add \\?from=", id="empty-from"),
        pytest.param("smtp://mail.example?from=nobody", "add \\?from=", id="from-not-an-address"),
        pytest.param("smtp://?from=a@b.example", "no host", id="no-host"),
        pytest.param("smtp://mail.example:x?from=a@b.example", "invalid port", id="bad-port"),
        pytest.param(
            "smtp://mail.example?from=a@b.example&starttls=yes",
            "true or false",
            id="bad-flag",
        ),
        pytest.param(
            "smtp://mail.example?from=a@b.example&form=x", "unknown .*form", id="unknown-param"
        ),
        pytest.param(
            "smtps://mail.example?from=a@b.example&starttls=true",
            "implicit TLS",
            id="tls-twice",
        ),
        pytest.param("file://server/share/mail.jsonl", "not a host", id="remote-file"),
        pytest.param("file:", "without a path", id="file-without-path"),
        pytest.param("log:/var/log", "no path", id="log-with-path"),
        pytest.param("sendmail:/usr/sbin/sendmail", "unknown notification channel", id="scheme"),
        pytest.param("mail.example", "not a notification URL", id="no-scheme"),
    ],
)
def test_bad_urls_are_value_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        channel_from_url(url)


def test_errors_never_echo_the_smtp_password() -> None:
    with pytest.raises(ValueError) as caught:
        channel_from_url("smtp://user:hunter2@mail.example?starttls=maybe&from=a@b.example")
    assert "hunter2" not in str(caught.value)
