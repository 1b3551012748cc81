"""What tokens cost: the one rounding of money (training estimates, billed tasks, the usage report)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT_FRACTION = Decimal("0.0001")  # prices and costs are kept to four places


def token_cost(tokens: int, price_per_1k: Decimal) -> Decimal:
    """``tokens`` at ``price_per_1k`` a thousand tokens, rounded half up to four places."""
    return (Decimal(tokens) / 1000 * price_per_1k).quantize(CENT_FRACTION, ROUND_HALF_UP)
