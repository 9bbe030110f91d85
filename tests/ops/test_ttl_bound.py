"""MACHINERY_EVENT_TTL_DAYS within what MongoDB's TTL index takes (expireAfterSeconds 0 to 2147483647):
a larger value stops every entry point at start, naming the bound, instead of failing createIndexes at
every start and answering 503 for good."""

from __future__ import annotations

import pytest

from machinery.config import MAX_TTL_DAYS, load_config
from machinery.exceptions import ConfigError
from machinery.serving import free_port
from tests.support.processes import MACHINERY, clean_env, run

TOO_LONG = str(MAX_TTL_DAYS + 1)  # 24856 days: 2147558400 seconds


@pytest.mark.parametrize("command", [["init-db", "--wait", "0"], ["serve", "--bind", "127.0.0.1:{port}"],
                                     ["worker"]], ids=["init-db", "serve", "worker"])
def test_a_ttl_past_what_mongodb_takes_stops_the_start_naming_the_bound(command):
    # GIVEN a TTL of 24,856 days WHEN a machinery command starts
    command = [part.format(port=free_port()) for part in command]
    result = run([*MACHINERY, *command], clean_env(MACHINERY_EVENT_TTL_DAYS=TOO_LONG), timeout=30)
    # THEN it stops at once, naming the variable and the bound, without a traceback
    assert result.returncode != 0
    assert "MACHINERY_EVENT_TTL_DAYS" in result.stderr and "24855 days" in result.stderr, result.stderr
    assert "2147483647 seconds" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_the_largest_ttl_mongodb_takes_is_accepted():
    # GIVEN the largest whole number of days that fits WHEN the settings are read THEN it is kept
    assert load_config({"MACHINERY_EVENT_TTL_DAYS": str(MAX_TTL_DAYS)})["EVENT_TTL_DAYS"] == MAX_TTL_DAYS
    assert int(MAX_TTL_DAYS * 86400) <= 2147483647
    with pytest.raises(ConfigError):
        load_config({"MACHINERY_EVENT_TTL_DAYS": "inf"})
