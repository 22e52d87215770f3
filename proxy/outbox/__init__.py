"""The outbox: answering chargers while their back-office is unreachable, and replaying what they sent."""
