"""Money is rounded one way everywhere: half up to four places (modelcards.pricing.token_cost)."""

from __future__ import annotations

from decimal import Decimal

from modelcards.pricing import token_cost


def test_token_cost_rounds_half_up_to_four_places():
    assert token_cost(1, Decimal("0.25")) == Decimal("0.0003")  # 0.00025: banker's rounding would say 0.0002
    assert token_cost(3, Decimal("0.25")) == Decimal("0.0008")  # 0.00075
    assert token_cost(1_000, Decimal("0.0030")) == Decimal("0.0030")
    assert token_cost(0, Decimal("0.0030")) == Decimal("0.0000")
    assert str(token_cost(12_345, Decimal("0.0001"))) == "0.0012"
