"""Proto <-> domain conversions shared by the servicers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import cast

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from coalition.v1 import common_pb2, members_pb2, partners_pb2, rewards_pb2
from gateway.domain import credentials as dc
from gateway.domain import donations as dd
from gateway.domain import expiry as de
from gateway.domain import ledger as dl
from gateway.domain import links as dln
from gateway.domain import members as dm
from gateway.domain import partners as dp
from gateway.domain import programs
from gateway.domain import rewards as drw
from gateway.domain import rules as dr
from gateway.domain import tiers as dt
from gateway.domain.errors import InvalidArgument
from gateway.domain.partners import parse_earn_rate, parse_partner_name

STRING_FIELD_CHARS_MAX = 4096
"""No string field of any request is longer; oversized input fails before it reaches a rule."""


def money(amount_minor: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency_code=currency)


def to_datetime(stamp: timestamp_pb2.Timestamp, field: str, reason: str) -> datetime:
    """A request's Timestamp as an aware UTC datetime; INVALID_ARGUMENT (`reason`, naming
    `field`) outside the years 1-9999 or with nanos outside 0-999,999,999."""
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.on_field(
            field, reason, "a timestamp between years 1 and 9999"
        ) from None


def timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def request_hash(request: Message) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def check_string_sizes(message: Message, prefix: str = "") -> None:
    """Reject any string field (at any depth) longer than STRING_FIELD_CHARS_MAX, or holding a
    NUL character: no field has a use for one, and PostgreSQL cannot store it in text (SQLite
    would, so the two backends would disagree)."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        for item in _items(value):
            if isinstance(item, str) and len(item) > STRING_FIELD_CHARS_MAX:
                raise InvalidArgument.on_field(
                    path, "FIELD_TOO_LONG", f"at most {STRING_FIELD_CHARS_MAX} characters"
                )
            if isinstance(item, str) and "\x00" in item:
                raise InvalidArgument.on_field(
                    path, "INVALID_CHARACTERS", "NUL characters are not allowed"
                )
            if isinstance(item, Message):
                check_string_sizes(item, f"{path}.")


def _items(value: object) -> list[object]:
    """The strings and messages inside a field value (scalar, repeated or map)."""
    if isinstance(value, str | Message):
        return [value]
    if isinstance(value, bytes | int | float | bool):
        return []
    if hasattr(value, "items"):  # a map field
        return [*value.keys(), *value.values()]  # type: ignore[attr-defined]
    return [*cast(Iterable[object], value)]


# -- members ---------------------------------------------------------------------------------


def member_to_proto(member: dm.Member) -> members_pb2.Member:
    c = member.contact
    return members_pb2.Member(
        name=member.name,
        loyalty_number=member.loyalty_number,
        display_name=c.display_name,
        email=c.email,
        phone_number=c.phone_number,
        locale=c.locale,
        marketing_consent=c.marketing_consent,
        tier=member.tier,
        create_time=timestamp(member.create_time),
        update_time=timestamp(member.update_time),
    )


def contact_from_proto(member: members_pb2.Member) -> dm.ContactDetails:
    return dm.ContactDetails(
        display_name=member.display_name,
        email=member.email,
        phone_number=member.phone_number,
        locale=member.locale,
        marketing_consent=member.marketing_consent,
    )


# -- partners --------------------------------------------------------------------------------

_TYPE_TO_PROTO = {
    t: partners_pb2.PartnerType.Value(f"PARTNER_TYPE_{t.value}") for t in dp.PartnerType
}
_TYPE_FROM_PROTO: dict[int, dp.PartnerType] = {v: k for k, v in _TYPE_TO_PROTO.items()}


def partner_type_from_proto(value: int, field_path: str = "partner.type") -> dp.PartnerType:
    kind = _TYPE_FROM_PROTO.get(value)
    if kind is None:
        raise InvalidArgument.on_field(
            field_path,
            "INVALID_PARTNER_TYPE",
            "one of " + ", ".join(f"PARTNER_TYPE_{t.value}" for t in dp.PartnerType),
        )
    return kind


def partner_type_filter(value: int) -> dp.PartnerType | None:
    return None if value == 0 else partner_type_from_proto(value, "type")


def partner_to_proto(partner: dp.Partner) -> partners_pb2.Partner:
    s = partner.settings
    return partners_pb2.Partner(
        name=partner.name,
        display_name=s.display_name,
        type=_TYPE_TO_PROTO[partner.type],
        base_earn_rate=str(s.base_earn_rate),
        earn_currency_code=s.earn_currency_code,
        settlement_currency_code=s.settlement_currency_code,
        webhook_url=s.webhook_url,
        authorized_airlines=[f"partners/{a}" for a in s.authorized_airlines],
        time_zone=s.time_zone,
        create_time=timestamp(partner.create_time),
        update_time=timestamp(partner.update_time),
        category_rates=[
            partners_pb2.CategoryRate(category=c, earn_rate=str(r)) for c, r in s.category_rates
        ],
        earn_rounding=_ROUNDING_TO_PROTO[s.earn_rounding],
        minimum_spend_minor=s.minimum_spend_minor,
        transaction_cap_points=s.transaction_cap_points,
        program=program_to_proto(s.program) if s.program else None,
        charity=charity_to_proto(s.charity) if s.charity else None,
    )


_CHARSET_TO_PROTO = {
    programs.Charset.DIGITS: partners_pb2.NUMBER_CHARSET_DIGITS,
    programs.Charset.ALPHANUMERIC: partners_pb2.NUMBER_CHARSET_ALPHANUMERIC,
}
_CHARSET_FROM_PROTO = {
    partners_pb2.NUMBER_CHARSET_UNSPECIFIED: programs.Charset.ALPHANUMERIC,
    **{v: k for k, v in _CHARSET_TO_PROTO.items()},
}
_CHECK_TO_PROTO = {
    c: partners_pb2.CheckDigitScheme.Value(f"CHECK_DIGIT_SCHEME_{c.value}")
    for c in programs.CheckDigit
}
_CHECK_FROM_PROTO = {
    partners_pb2.CHECK_DIGIT_SCHEME_UNSPECIFIED: programs.CheckDigit.NONE,
    **{v: k for k, v in _CHECK_TO_PROTO.items()},
}


def program_to_proto(program: programs.Program) -> partners_pb2.LoyaltyProgram:
    fmt = program.number_format
    return partners_pb2.LoyaltyProgram(
        unit=program.unit,
        number_format=partners_pb2.ProgramNumberFormat(
            min_length=fmt.min_length,
            max_length=fmt.max_length,
            charset=_CHARSET_TO_PROTO[fmt.charset],
            check_digit=_CHECK_TO_PROTO[fmt.check_digit],
            prefix=fmt.prefix,
        ),
        conversion_rate=str(program.conversion_rate) if program.conversion_rate else "",
        conversion_minimum_points=program.conversion_minimum_points,
    )


def program_from_proto(
    message: partners_pb2.LoyaltyProgram, field_path: str = "partner.program"
) -> programs.Program:
    """A draft; gateway.domain.programs.validate_program checks it."""
    fmt = message.number_format
    charset = _CHARSET_FROM_PROTO.get(fmt.charset)
    check = _CHECK_FROM_PROTO.get(fmt.check_digit)
    if charset is None:
        raise InvalidArgument.on_field(
            f"{field_path}.number_format.charset", "INVALID_NUMBER_FORMAT", "DIGITS or ALPHANUMERIC"
        )
    if check is None:
        raise InvalidArgument.on_field(
            f"{field_path}.number_format.check_digit", "INVALID_NUMBER_FORMAT", "NONE, LUHN or MOD7"
        )
    default = programs.NumberFormat()
    return programs.Program(
        unit=message.unit or "MILES",
        number_format=programs.NumberFormat(
            fmt.min_length or default.min_length,
            fmt.max_length or default.max_length,
            charset,
            check,
            fmt.prefix,
        ),
        conversion_rate=programs.parse_conversion_rate(
            message.conversion_rate, f"{field_path}.conversion_rate"
        ),
        conversion_minimum_points=message.conversion_minimum_points,
    )


_ROUNDING_TO_PROTO = {
    r: partners_pb2.EarnRounding.Value(f"EARN_ROUNDING_{r.value}") for r in dr.Rounding
}
_ROUNDING_FROM_PROTO: dict[int, dr.Rounding] = {
    partners_pb2.EARN_ROUNDING_UNSPECIFIED: dr.Rounding.DOWN,
    **{v: k for k, v in _ROUNDING_TO_PROTO.items()},
}


def _rounding(value: int) -> dr.Rounding:
    rounding = _ROUNDING_FROM_PROTO.get(value)
    if rounding is None:
        raise InvalidArgument.on_field(
            "partner.earn_rounding", "INVALID_ROUNDING", "DOWN, NEAREST or UP"
        )
    return rounding


def settings_from_proto(partner: partners_pb2.Partner) -> dp.PartnerSettings:
    return dp.PartnerSettings(
        display_name=partner.display_name,
        base_earn_rate=parse_earn_rate(partner.base_earn_rate),
        earn_currency_code=partner.earn_currency_code or "USD",
        settlement_currency_code=partner.settlement_currency_code or "USD",
        webhook_url=partner.webhook_url,
        authorized_airlines=tuple(
            parse_partner_name(a, f"partner.authorized_airlines[{i}]")
            for i, a in enumerate(partner.authorized_airlines)
        ),
        time_zone=partner.time_zone or "UTC",
        category_rates=tuple(
            (r.category, parse_earn_rate(r.earn_rate, f"partner.category_rates[{i}].earn_rate"))
            for i, r in enumerate(partner.category_rates)
        ),
        earn_rounding=_rounding(partner.earn_rounding),
        minimum_spend_minor=partner.minimum_spend_minor,
        transaction_cap_points=partner.transaction_cap_points,
        program=program_from_proto(partner.program) if partner.HasField("program") else None,
        charity=charity_from_proto(partner.charity) if partner.HasField("charity") else None,
    )


def charity_to_proto(profile: dd.CharityProfile) -> partners_pb2.CharityProfile:
    return partners_pb2.CharityProfile(
        description=profile.description,
        causes=list(profile.causes),
        minimum_donation_points=profile.minimum_donation_points,
        value_per_thousand_points_minor=profile.value_per_thousand_minor,
        paused=profile.paused,
    )


def charity_from_proto(message: partners_pb2.CharityProfile) -> dd.CharityProfile:
    """A draft; gateway.domain.donations.validate_profile checks it."""
    return dd.CharityProfile(
        description=message.description,
        causes=tuple(message.causes),
        minimum_donation_points=message.minimum_donation_points or 1,
        value_per_thousand_minor=message.value_per_thousand_points_minor,
        paused=message.paused,
    )


# -- campaigns -------------------------------------------------------------------------------


def campaign_from_proto(campaign: partners_pb2.Campaign, now: datetime) -> dr.Campaign:
    """A draft from the request; dr.validate_campaign checks it."""
    days = set()
    for i, day in enumerate(campaign.days_of_week):
        if not 1 <= day <= 7:
            raise InvalidArgument.on_field(
                f"campaign.days_of_week[{i}]", "INVALID_DAY_OF_WEEK", "MONDAY to SUNDAY"
            )
        days.add(int(day))
    if not campaign.HasField("end_time"):
        raise InvalidArgument.on_field(
            "campaign.end_time", "INVALID_CAMPAIGN_WINDOW", "a campaign needs an end_time"
        )
    start = (
        to_datetime(campaign.start_time, "campaign.start_time", "INVALID_CAMPAIGN_WINDOW")
        if campaign.HasField("start_time")
        else now
    )
    return dr.Campaign(
        id="",
        partner_id="",
        display_name=campaign.display_name,
        start_time=start,
        end_time=to_datetime(campaign.end_time, "campaign.end_time", "INVALID_CAMPAIGN_WINDOW"),
        days_of_week=frozenset(days),
        start_hour=campaign.start_hour,
        end_hour=campaign.end_hour,
        categories=frozenset(
            dr.parse_category(c, f"campaign.categories[{i}]")
            for i, c in enumerate(campaign.categories)
        ),
        multiplier=dr.parse_multiplier(campaign.multiplier),
        bonus_points=campaign.bonus_points,
        action=campaign.action,
        member_budget_points=campaign.member_budget_points,
        total_budget_points=campaign.total_budget_points,
    )


def campaign_to_proto(campaign: dr.Campaign, spent: int) -> partners_pb2.Campaign:
    return partners_pb2.Campaign(
        name=campaign.name,
        display_name=campaign.display_name,
        start_time=timestamp(campaign.start_time),
        end_time=timestamp(campaign.end_time),
        days_of_week=[
            cast(partners_pb2.DayOfWeek.ValueType, d) for d in sorted(campaign.days_of_week)
        ],
        start_hour=campaign.start_hour,
        end_hour=campaign.end_hour,
        categories=sorted(campaign.categories),
        multiplier=str(campaign.multiplier) if campaign.multiplier is not None else "",
        bonus_points=campaign.bonus_points,
        action=campaign.action,
        member_budget_points=campaign.member_budget_points,
        total_budget_points=campaign.total_budget_points,
        spent_points=spent,
        create_time=timestamp(campaign.create_time),
    )


def api_key_to_proto(key: dc.ApiKey) -> partners_pb2.ApiKey:
    return partners_pb2.ApiKey(
        name=key.name,
        prefix=key.prefix,
        display_name=key.display_name,
        create_time=timestamp(key.create_time),
        revoke_time=timestamp(key.revoke_time),
    )


# -- ledger ----------------------------------------------------------------------------------

_TXN_TYPE = {t: common_pb2.TransactionType.Value(f"TRANSACTION_TYPE_{t.value}") for t in dl.TxnType}
_TXN_TYPE_FROM: dict[int, dl.TxnType] = {v: k for k, v in _TXN_TYPE.items()}
_TXN_STATE = {
    s: common_pb2.TransactionState.Value(f"TRANSACTION_STATE_{s.value}") for s in dl.TxnState
}


def txn_type_filter(value: int) -> dl.TxnType | None:
    if value == 0:
        return None
    kind = _TXN_TYPE_FROM.get(value)
    if kind is None:
        raise InvalidArgument.on_field(
            "type", "INVALID_TRANSACTION_TYPE", "a TransactionType the ledger records"
        )
    return kind


def component_to_proto(component: dict[str, object]) -> common_pb2.EarnComponent:
    return common_pb2.EarnComponent(
        kind=str(component["kind"]),
        description=str(component["description"]),
        points=int(str(component["points"])),
        source=str(component.get("source", "")),
    )


def balance_to_proto(
    balance: dl.Balance, tier: str | dt.TierStatus, expiring: de.Expiring | None = None
) -> common_pb2.Balance:
    """With a TierStatus, also the progress to the next tier and the review time."""
    message = common_pb2.Balance(
        available_points=balance.available,
        pending_points=balance.pending,
        held_points=balance.held,
    )
    if expiring is not None:
        message.expiring_points = expiring.points
        message.expiring_time.FromDatetime(expiring.time)
    if isinstance(tier, str):
        message.tier = tier
        return message
    message.tier = tier.tier.code
    message.next_tier = tier.next_tier.code if tier.next_tier else ""
    message.points_to_next_tier = tier.points_to_next_tier
    message.qualifying_points = tier.qualifying_points
    if tier.review_time is not None:
        message.tier_review_time.FromDatetime(tier.review_time)
    return message


def transaction_to_proto(
    txn: dl.Transaction, tier: str | dt.TierStatus
) -> common_pb2.PointsTransaction:
    related = f"members/{txn.member_id}/transactions/{txn.related_id}" if txn.related_id else ""
    return common_pb2.PointsTransaction(
        name=txn.name,
        type=_TXN_TYPE[txn.type],
        state=_TXN_STATE[txn.state],
        points=txn.points,
        breakdown=[component_to_proto(c) for c in txn.breakdown],
        balance=balance_to_proto(txn.balance_after, tier),
        partner=f"partners/{txn.partner_id}",
        partner_reference=txn.partner_reference,
        create_time=timestamp(txn.create_time),
        vest_time=timestamp(txn.due_time) if txn.type is dl.TxnType.EARN else None,
        related_transaction=related,
        held_points=txn.open_points if txn.type is dl.TxnType.AUTHORIZATION else 0,
        channel_partner=f"partners/{txn.channel_partner_id}" if txn.channel_partner_id else "",
        occur_time=timestamp(txn.occur_time),
    )


def parked_to_proto(parked: dln.ParkedEarn) -> common_pb2.PointsTransaction:
    """A parked agency earn, shaped as the transaction it will become once claimed."""
    return common_pb2.PointsTransaction(
        name=parked.name,
        type=common_pb2.TRANSACTION_TYPE_EARN,
        state=(
            common_pb2.TRANSACTION_STATE_PARKED
            if parked.state is dln.ParkedState.PARKED
            else common_pb2.TRANSACTION_STATE_VOIDED
        ),
        points=parked.points,
        breakdown=[component_to_proto(c) for c in parked.breakdown],
        partner=f"partners/{parked.airline_id}",
        partner_reference=parked.partner_reference,
        create_time=timestamp(parked.create_time),
        vest_time=timestamp(parked.vest_time),
        channel_partner=f"partners/{parked.agency_id}",
        occur_time=timestamp(parked.occur_time),
    )


# -- linked accounts -------------------------------------------------------------------------


def linked_account_to_proto(account: dln.LinkedAccount) -> members_pb2.LinkedAccount:
    message = members_pb2.LinkedAccount(
        name=account.name,
        create_time=timestamp(account.create_time),
        unlink_time=timestamp(account.unlink_time),
    )
    partner = f"partners/{account.partner_id}"
    if account.kind is dln.LinkKind.ACCOUNT:
        message.partner_account.CopyFrom(
            common_pb2.PartnerAccount(partner=partner, external_id=account.external_id)
        )
    else:
        message.program_number.CopyFrom(
            common_pb2.ProgramNumber(program=partner, number=account.external_id)
        )
    return message


# -- rewards ---------------------------------------------------------------------------------

_REWARD_KIND = {k: rewards_pb2.Reward.Kind.Value(f"KIND_{k.value}") for k in drw.RewardKind}
_REWARD_KIND_FROM = {v: k for k, v in _REWARD_KIND.items()}
_VOUCHER_STATE = {s: rewards_pb2.Voucher.State.Value(f"STATE_{s.value}") for s in drw.VoucherState}


def time_from_proto(message: Message, field: str, field_path: str) -> datetime | None:
    """An optional Timestamp field; one outside what a datetime holds is bad input."""
    if not message.HasField(field):
        return None
    try:
        return cast(datetime, getattr(message, field).ToDatetime(tzinfo=UTC))
    except (ValueError, OverflowError):
        raise InvalidArgument.on_field(
            field_path, "INVALID_TIMESTAMP", "a time between years 1 and 9999"
        ) from None


def reward_from_proto(reward: rewards_pb2.Reward) -> drw.RewardDraft:
    kind = _REWARD_KIND_FROM.get(reward.kind)
    if kind is None:
        raise InvalidArgument.on_field(
            "reward.kind", "MISSING_KIND", "FREE_NIGHT, RIDE_CREDIT, UPGRADE or GIFT"
        )
    validity = reward.voucher_validity
    if validity.seconds < 0 or validity.nanos < 0 or validity.seconds > 10**12:
        validity_td = timedelta(0)  # rejected by the range check below, with its message
    else:
        validity_td = validity.ToTimedelta()
    return drw.check_draft(
        drw.RewardDraft(
            display_name=reward.display_name,
            description=reward.description,
            kind=kind,
            points_price=reward.points_price,
            stock=reward.stock,
            start_time=time_from_proto(reward, "start_time", "reward.start_time"),
            end_time=time_from_proto(reward, "end_time", "reward.end_time"),
            voucher_validity=validity_td,
        )
    )


def reward_to_proto(reward: drw.Reward) -> rewards_pb2.Reward:
    message = rewards_pb2.Reward(
        name=reward.name,
        display_name=reward.display_name,
        description=reward.description,
        kind=_REWARD_KIND[reward.kind],
        points_price=reward.points_price,
        stock=reward.stock,
        available_stock=reward.available_stock,
        start_time=timestamp(reward.start_time),
        end_time=timestamp(reward.end_time),
        create_time=timestamp(reward.create_time),
    )
    message.voucher_validity.FromTimedelta(reward.voucher_validity)
    return message


def voucher_to_proto(voucher: drw.Voucher, now: datetime) -> rewards_pb2.Voucher:
    member = f"members/{voucher.member_id}"
    refund = voucher.refund_transaction_id
    return rewards_pb2.Voucher(
        code=drw.display_code(voucher.code),
        reward=f"partners/{voucher.partner_id}/rewards/{voucher.reward_id}",
        member=member,
        state=_VOUCHER_STATE[voucher.state_at(now)],
        issue_time=timestamp(voucher.issue_time),
        expire_time=timestamp(voucher.expire_time),
        consume_time=timestamp(voucher.consume_time),
        transaction=f"{member}/transactions/{voucher.transaction_id}",
        points=voucher.points,
        refund_transaction=f"{member}/transactions/{refund}" if refund else "",
    )
