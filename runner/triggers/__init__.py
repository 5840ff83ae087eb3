"""S3 upload triggers: start a Map Run when data lands, exactly once (``docs/triggers.md``).

::

    events (SQS / listing) ──► events.parse_message ──► patterns.matches ──► ledger.claim
                                                                               │
                           notify (SNS / webhook) ◄── engine.run / resume ◄────┘

Modules import only downwards: ``patterns`` and ``events`` know nothing of the rest,
``config`` validates, ``ledger`` records, ``service`` runs, ``aws`` deploys the same patterns.
"""

from runner.triggers.config import Trigger, TriggerConfig, load_config
from runner.triggers.events import ObjectCreated, Refused, check_key, parse_message
from runner.triggers.ledger import Ledger
from runner.triggers.patterns import PatternError, matches, validate
from runner.triggers.service import TriggerService, serve

__all__ = [
    "Ledger",
    "ObjectCreated",
    "PatternError",
    "Refused",
    "Trigger",
    "TriggerConfig",
    "TriggerService",
    "check_key",
    "load_config",
    "matches",
    "parse_message",
    "serve",
    "validate",
]
