"""The wire: WebSocket frames and OCPP-J envelopes (the native codec), the HTTP handshake, OCPP's own rules."""
