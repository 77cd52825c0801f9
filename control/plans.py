"""Billing plans: hourly message quotas and limits on what a user may create.

The four plans of icmqtt-rest-api-v1.md, with its hourly message quotas (100; 1,000; 10,000; unlimited).
The document gives no numbers for the other limits; these defaults are Roost's, documented in
docs/api.md, and every number can be changed in the config file (`[plans.NAME]`). 0 means unlimited.

A fifth plan, "unlimited", is Roost's own: the default plan (`default_plan`) of users created without
one. A self-hosted broker's owner is not a customer on a free tier: their own devices must never be
throttled by surprise. The seed's four plans stay as the seed says for the users who are given them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PLAN", "DEFAULT_PLANS", "Plan", "UNLIMITED"]

UNLIMITED = 0
DEFAULT_PLAN = "unlimited"


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    messages_per_hour: int
    max_projects: int
    max_devices: int
    max_topics: int
    max_instances: int
    retention_days: int

    def allows(self, limit: int, current: int) -> bool:
        """Whether one more fits under `limit` (0 = unlimited) when `current` exist."""
        return limit == UNLIMITED or current < limit


DEFAULT_PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan("free", 100, 3, 10, 20, 1, 7),
        Plan("starter", 1_000, 10, 50, 100, 3, 30),
        Plan("professional", 10_000, 20, 500, 1_000, 10, 90),
        Plan("enterprise", UNLIMITED, UNLIMITED, UNLIMITED, UNLIMITED, UNLIMITED, 365),
        Plan(DEFAULT_PLAN, UNLIMITED, UNLIMITED, UNLIMITED, UNLIMITED, UNLIMITED, 365),
    )
}
