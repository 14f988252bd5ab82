"""The settings of events out (docs/events.md, docs/configuration.md): the outbox relay, the
Kafka sink and signed outbound webhooks. Imported into ``config.settings``; read from the
environment like every setting (``config.env``)."""

from __future__ import annotations

from config.env import env_bool, env_int, env_list, env_str

IS_PRODUCTION = (env_str("APP_ENV", "development") or "development").lower() == "production"

# The relay (`manage.py outbox_relay`) publishes this many outbox rows per batch, sleeps this long
# when there are none, and backs off up to this long while a sink is down.
OUTBOX_RELAY_BATCH_SIZE = env_int("OUTBOX_RELAY_BATCH_SIZE", 500)
OUTBOX_RELAY_POLL_SECONDS = float(env_str("OUTBOX_RELAY_POLL_SECONDS", "0.2") or 0.2)
OUTBOX_RELAY_BACKOFF_MAX_SECONDS = float(env_str("OUTBOX_RELAY_BACKOFF_MAX_SECONDS", "60") or 60)
# Published outbox rows are deleted after this many days.
OUTBOX_RETENTION_DAYS = env_int("OUTBOX_RETENTION_DAYS", 7)
# Whether a webhook.received event carries the provider's body (read from the stored event).
EVENTS_WEBHOOK_BODY = env_bool("EVENTS_WEBHOOK_BODY", True)
# Kafka: on when KAFKA_BOOTSTRAP_SERVERS is set. SASL/TLS for a managed Kafka (Amazon MSK:
# SASL_SSL with SCRAM-SHA-512 on port 9096). enable.idempotence is on unless switched off (a broker
# without idempotent producers, such as the Tansu the tests run); without it one message is in
# flight per connection, so a retry cannot reorder a partition.
KAFKA_BOOTSTRAP_SERVERS = env_str("KAFKA_BOOTSTRAP_SERVERS") or ""
KAFKA_ENABLE_IDEMPOTENCE = env_bool("KAFKA_ENABLE_IDEMPOTENCE", True)
KAFKA_CONFIG = {
    "bootstrap.servers": KAFKA_BOOTSTRAP_SERVERS,
    "client.id": env_str("KAFKA_CLIENT_ID") or "school-payments",
    "security.protocol": env_str("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT",
    "enable.idempotence": KAFKA_ENABLE_IDEMPOTENCE,
    "acks": "all",
    "max.in.flight.requests.per.connection": 5 if KAFKA_ENABLE_IDEMPOTENCE else 1,
    "linger.ms": env_int("KAFKA_LINGER_MS", 5),
    "message.timeout.ms": env_int("KAFKA_MESSAGE_TIMEOUT_MS", 30_000),
    "socket.timeout.ms": 10_000,
}
_OPTIONAL = {
    "sasl.mechanism": env_str("KAFKA_SASL_MECHANISM"),
    "sasl.username": env_str("KAFKA_SASL_USERNAME"),
    "sasl.password": env_str("KAFKA_SASL_PASSWORD"),
    "ssl.ca.location": env_str("KAFKA_SSL_CA_LOCATION"),
}
KAFKA_CONFIG.update({key: value for key, value in _OPTIONAL.items() if value})
KAFKA_TOPIC_PREFIX = env_str("KAFKA_TOPIC_PREFIX") or ""
# Create missing topics (partitions, replication) through the admin API; off where topics are
# managed elsewhere (infrastructure code, MSK without the permission).
KAFKA_CREATE_TOPICS = env_bool("KAFKA_CREATE_TOPICS", True)
KAFKA_TOPIC_PARTITIONS = env_int("KAFKA_TOPIC_PARTITIONS", 6)
KAFKA_TOPIC_REPLICATION_FACTOR = env_int("KAFKA_TOPIC_REPLICATION_FACTOR", 3 if IS_PRODUCTION else 1)
# How long a batch may wait for the broker's acknowledgements before the relay backs off.
KAFKA_PUBLISH_TIMEOUT_SECONDS = float(env_str("KAFKA_PUBLISH_TIMEOUT_SECONDS", "10") or 10)
# Signed outbound webhooks to the schools' own systems (Standard Webhooks).
OUTBOUND_WEBHOOK_TIMEOUT_SECONDS = float(env_str("OUTBOUND_WEBHOOK_TIMEOUT_SECONDS", "15") or 15)
# Seconds between tries after the first (the specification's schedule: 5 s, 5 min, 30 min, 2 h,
# 5 h, 10 h, 10 h), comma-separated.
OUTBOUND_WEBHOOK_RETRY_SCHEDULE_SECONDS = [
    int(value) for value in env_list("OUTBOUND_WEBHOOK_RETRY_SCHEDULE_SECONDS", ["5", "300", "1800", "7200", "18000", "36000", "36000"])
]
# An endpoint whose every delivery failed for this many days is disabled (staff are told).
OUTBOUND_WEBHOOK_DISABLE_AFTER_DAYS = env_int("OUTBOUND_WEBHOOK_DISABLE_AFTER_DAYS", 5)
# After a secret rotation the previous secret signs beside the new one for this many hours.
OUTBOUND_WEBHOOK_SECRET_OVERLAP_HOURS = env_int("OUTBOUND_WEBHOOK_SECRET_OVERLAP_HOURS", 24)
# Plain http:// endpoints and private, loopback or link-local addresses (never in production:
# staff must not be able to point the service at its own network).
OUTBOUND_WEBHOOK_ALLOW_HTTP = env_bool("OUTBOUND_WEBHOOK_ALLOW_HTTP", not IS_PRODUCTION)
OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env_bool("OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES", not IS_PRODUCTION)

__all__ = [name for name in dir() if name.isupper() and name != "IS_PRODUCTION"]
