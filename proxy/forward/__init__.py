"""Forwarding: the listener, admission and dial, links that move bytes, relays that serve offline."""
