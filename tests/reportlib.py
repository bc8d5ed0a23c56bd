"""A small day of alerts for the report tests: stuffing in shadow, a partner's flood later
allow-listed, injection from several networks, an undocumented endpoint, a tag on a bystander."""

from __future__ import annotations

from pipeline.alerts import Alert, OperatorAction
from pipeline.incidents.testing import make_alert

__all__ = ["sample_alerts"]


def sample_alerts(t0: int) -> list[Alert]:
    alerts = [
        make_alert(
            subject=f"ip:203.0.113.{10 + i}",
            mode="shadow",
            t=t0 + i * 5_000,
            feature="failed_logins",
            value=20 + i,
            evidence=[f"req-{i}"],
        )
        for i in range(14)
    ]
    alerts.append(
        make_alert(
            subject="ip:198.51.100.7",
            mode="shadow",
            t=t0 + 40_000,
            detector="distributed_stuffing",
            code="distributed_credential_stuffing",
            feature="failing_addresses",
            value=15,
            text="failed login in a campaign on /v1/login: 80 of 90 logins failing from 15 "
            "addresses, UA 'python-requests/2.31'",
        )
    )
    alerts += [
        make_alert(
            subject="consumer:partner-7",
            detector="rate",
            code="flood",
            t=t0 + 600_000,
            route="/v1/orders",
            feature="requests_per_s",
            value=480,
            baseline=40,
            limit=60,
            attack=["T1499.003"],
        ),
        make_alert(
            subject="consumer:partner-7",
            kind="operator",
            action="allow",
            t=t0 + 1_500_000,
            detector="operator",
            route=None,
            operator=OperatorAction(
                action="override_allow", actor="alice", reason="nightly | sync"
            ),
        ),
    ]
    alerts += [
        make_alert(
            subject=f"ip:10.9.{i}.1",
            detector="injection",
            code="sqli",
            route="/v1/search",
            t=t0 + 900_000 + i * 30_000,
            attack=["T1190"],
            evidence=[f"r{i}"],
        )
        for i in range(5)
    ]
    alerts.append(
        make_alert(
            subject="route:/v1/internal/debug",
            kind="finding",
            severity="low",
            detector="spec_drift",
            code="shadow_endpoint",
            route="/v1/internal/debug",
            t=t0 + 1_200_000,
            attack=[],
            text="GET /v1/internal/debug answered 200, no documented path",
        )
    )
    alerts.append(
        make_alert(
            subject="ip:198.51.100.77",
            action="tag",
            detector="bot_behaviour",
            code="bot",
            t=t0 + 2_000_000,
            route="/v1/products",
        )
    )
    return alerts  # fmt: skip
