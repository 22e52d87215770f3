"""The load the scenarios offer: the open-loop generator and one target measured under it, the
charger fleet simulator, hostile clients, and realistic capture events. It builds on
bench/harness/ (never the other way round)."""
