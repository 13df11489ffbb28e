"""`coalition campaigns|rates|tiers` as an operator runs them: real processes, real databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import cli_db, coalition, env_for  # noqa: F401 (cli_db is a fixture)

PARTNER = "grand-harbor-hotels"  # seeded by `coalition demo`
END = "2030-01-01T00:00:00Z"


@pytest.fixture
async def demo_db(cli_db: str, tmp_path: Path) -> str:  # noqa: F811
    code, _, err = await coalition("demo", url=cli_db, cwd=tmp_path)
    assert code == 0, err
    return cli_db


async def test_campaign_create_is_idempotent_and_listed(demo_db: str, tmp_path: Path) -> None:
    args = ("campaigns", "create", PARTNER, "--name", "Spa week", "--end", END)
    args += ("--category", "spa", "--multiplier", "3", "--total-budget", "5000")
    first = await coalition(*args, url=demo_db, cwd=tmp_path)
    again = await coalition(*args, url=demo_db, cwd=tmp_path)
    assert first[0] == again[0] == 0, first[2] + again[2]
    assert first[1] == again[1]  # the same campaign, not a second one
    assert "x3 on spa" in first[1] and "paid 0/5,000" in first[1]

    code, out, err = await coalition("campaigns", "list", PARTNER, url=demo_db, cwd=tmp_path)
    assert code == 0, err
    assert out.count("Spa week") == 1
    assert "Double points weekends" in out  # the demo's own campaigns

    name = first[1].split()[0]
    code, out, _ = await coalition("campaigns", "end", name, url=demo_db, cwd=tmp_path)
    assert code == 0 and name in out
    code, _, err = await coalition("campaigns", "end", name, url=demo_db, cwd=tmp_path)
    assert code == 2 and "CAMPAIGN_ENDED" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(("--end", "2030-01-01"), "say the zone", id="naive-time"),
        pytest.param(("--end", END), "NO_CAMPAIGN_REWARD", id="no-reward"),
        pytest.param(("--end", END, "--bonus", "5", "--days", "fun"), "day names", id="bad-day"),
        pytest.param(
            ("--end", END, "--bonus", "5", "--hours", "25-2"), "INVALID_HOURS", id="bad-hours"
        ),
    ],
)
async def test_bad_campaign_is_refused_plainly(
    demo_db: str, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    code, _, err = await coalition(
        "campaigns", "create", PARTNER, "--name", "X", *extra, url=demo_db, cwd=tmp_path
    )
    assert code == 2
    assert message in err
    assert "Traceback" not in err


async def test_rates_load_is_all_or_nothing(demo_db: str, tmp_path: Path) -> None:
    sheet = tmp_path / "rates.csv"
    sheet.write_text("base_currency,quote_currency,rate\nJPY,USD,0.0067\nCHF,USD,oops\n")
    code, _, err = await coalition("rates", "load", str(sheet), url=demo_db, cwd=tmp_path)
    assert code == 2
    assert "rates.csv:3" in err and "INVALID_EXCHANGE_RATE" in err
    code, out, _ = await coalition("rates", "list", url=demo_db, cwd=tmp_path)
    assert "JPY" not in out  # the good first row was not kept either

    sheet.write_text("base_currency,quote_currency,rate\nJPY,USD,0.0067\nCHF,USD,1.13\n")
    code, out, err = await coalition("rates", "load", str(sheet), url=demo_db, cwd=tmp_path)
    assert code == 0, err
    code, out, _ = await coalition("rates", "list", url=demo_db, cwd=tmp_path)
    assert "1 JPY = 0.0067 USD" in out and "1 CHF = 1.13 USD" in out


async def test_tiers_show_and_review(demo_db: str, tmp_path: Path) -> None:
    code, out, err = await coalition("tiers", "show", url=demo_db, cwd=tmp_path)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["BLUE", "SILVER", "GOLD", "PLATINUM"]
    code, out, err = await coalition("tiers", "review", url=demo_db, cwd=tmp_path)
    assert code == 0, err
    assert out.strip() == "reviewed 0 members, 0 changed tier"  # nobody is due a year early


async def test_custom_ladder_file(demo_db: str, tmp_path: Path) -> None:
    ladder = tmp_path / "tiers.toml"
    ladder.write_text(
        '[[tier]]\ncode = "MEMBER"\nthreshold_points = 0\n\n'
        '[[tier]]\ncode = "ELITE"\nname = "Elite"\nthreshold_points = 1000\nmultiplier = "2"\n'
    )
    env = env_for(demo_db) | {"COALITION_TIERS_FILE": str(ladder)}
    code, out, err = await coalition("tiers", "show", url=demo_db, cwd=tmp_path, env=env)
    assert code == 0, err
    assert out.split()[0] == "MEMBER" and "x2 base points" in out

    ladder.write_text('[[tier]]\ncode = "MEMBER"\nthreshold_points = 10\n')
    code, _, err = await coalition("tiers", "show", url=demo_db, cwd=tmp_path, env=env)
    assert code == 2
    assert "COALITION_TIERS_FILE" in err and "threshold 0" in err
