"""Session capture: OCPP messages into session events, and the journal that stores them."""
