"""The admin server's pure pieces: token hashing and lookup, roles, the [admin] configuration's
checks, histogram buckets."""

from __future__ import annotations

import re

import pytest

from support import switch_config
from switch.admin.auth import hash_token, may, new_token, user_of
from switch.admin.metrics import Buckets
from switch.app.config import AdminUser
from switch.errors import ConfigError

USERS = [AdminUser(name="cc", role="viewer", token_hash=hash_token("t-viewer")),
         AdminUser(name="ops", role="operator", token_hash=hash_token("t-operator"))]


def test_a_token_is_found_only_with_the_bearer_scheme_and_its_exact_value():
    assert user_of("Bearer t-viewer", USERS).name == "cc"
    assert user_of("bearer  t-operator", USERS).name == "ops"
    for header in (None, "", "Bearer", "Bearer ", "Basic t-viewer", "Bearer t-viewe", "t-viewer"):
        assert user_of(header, USERS) is None, header


def test_an_operator_may_do_what_a_viewer_may_and_not_the_other_way():
    viewer, operator = USERS
    assert may(viewer, "viewer") and not may(viewer, "operator")
    assert may(operator, "viewer") and may(operator, "operator")


def test_new_tokens_are_random_and_their_hash_is_what_the_configuration_takes():
    token = new_token()
    assert token != new_token() and len(token) >= 40
    assert hash_token(token).startswith("sha256:") and len(hash_token(token)) == 7 + 64


@pytest.mark.parametrize("admin, key", [
    ({"users": [{"name": "a", "role": "viewer", "token_hash": "plain-token"}]}, "admin.users[0].token_hash"),
    ({"users": [{"name": "a", "role": "boss", "token_hash": hash_token("x")}]}, "admin.users[0].role"),
    ({"users": [{"name": "a", "role": "viewer", "token_hash": hash_token("x")},
                {"name": "a", "role": "viewer", "token_hash": hash_token("y")}]}, "admin.users[1].name"),
    ({"users": [{"name": "a", "role": "viewer", "token_hash": hash_token("x")},
                {"name": "b", "role": "operator", "token_hash": hash_token("x")}]}, "admin.users"),
    ({"country": "XX"}, "admin.country"),
    ({"port": 70000}, "admin.port"),
])
def test_a_bad_admin_table_is_refused_naming_the_key(admin, key):
    with pytest.raises(ConfigError, match=re.escape(f"{key}: ")):
        switch_config({"MCI": 1}, admin=admin)


def test_admin_is_off_unless_configured_or_when_disabled():
    assert switch_config({"MCI": 1}).admin is None
    assert switch_config({"MCI": 1}, admin={"enabled": False}).admin.enabled is False


def test_buckets_count_a_value_on_a_bound_in_that_bound_and_report_cumulative_counts():
    buckets = Buckets((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        buckets.observe(value)
    assert buckets.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert buckets.sum == pytest.approx(2.65)
