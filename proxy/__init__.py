"""OCPP-J proxy that forwards chargers to their back-office and keeps every charging session."""
