"""How a sandbox behaves: ``SandboxConfig``, its credentials, limits and injected faults."""

from __future__ import annotations

from dataclasses import dataclass, field

from etl.sandbox.faults import DEFAULT_FAULT_KINDS, FAULT_KINDS, MALFORMED_KINDS
from etl.sandbox.webhook import WebhookConfig


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves: credentials, limits and injected faults.

    ``faults`` is the share of API calls answered with a fault, drawn (seeded by
    ``fault_seed``) from ``fault_kinds``; a "malformed" fault draws its shape from
    ``malformed_kinds``. ``loop_accounts``: lists of these accounts never end (see
    etl.sandbox.routes). ``webhook``: where the graph's changes are posted as Tencent's follow
    callbacks, with which faults (etl.sandbox.webhook); by default nowhere.
    """

    sdkappid: int = 1400000001
    admin: str = "administrator"
    secret_key: str = field(default="sandbox-secret-key-0123456789abcdef", repr=False)
    faults: float = 0.0
    fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    loop_accounts: tuple[str, ...] = ()
    slow_ms: float = 5000.0
    latency_ms: float = 0.0
    rate: float | None = None
    cursor_ttl: float | None = None
    sequence_key: str = "profile_sequence"
    fault_seed: int = 0
    webhook: WebhookConfig = field(default_factory=WebhookConfig)

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            raise ValueError(f"fault_kinds must be a non-empty subset of {FAULT_KINDS}")
        if set(self.malformed_kinds) - set(MALFORMED_KINDS) or not self.malformed_kinds:
            raise ValueError(f"malformed_kinds must be a non-empty subset of {MALFORMED_KINDS}")
        if not 0.0 <= self.faults <= 1.0:
            raise ValueError("faults is a probability between 0 and 1")
