"""Admitting a charger: route it, check its credentials, dial its back-office, or admit it offline.

`Admission.admit` takes a charger's upgrade request and gives back what the connection is served
with (`Admitted`), or raises a `Refusal`:

1. its client certificate, when it presented one (already verified by TLS): one issued to another
   identity is refused (403, `client_cert_mismatch`) before routing; then its route (404 without
   one), its credentials (`passthrough`: whatever it sends goes upstream; `managed`: its password,
   through the `PasswordGate`; security profile 3: the bound certificate, 403
   `client_cert_required` without one, never a fallback to Basic);
2. the dial of its back-office (`Dialer`), and with an outbox, at the same time, a look at what
   the store knows of the charger (an outbox to honour, the verifier of its credential);
3. the back-office's 101 admits it (with its outbox, if it has one, to replay first); any other
   HTTP answer is the back-office's verdict, passed back; an outage (nothing answered) admits it
   offline only with proof the proxy checks itself (`offline_proof`); never without.

Once the back-office accepted a passthrough charger, the digest of its Authorization header is
stored if it changed: what proves it the next time the back-office cannot be reached. A slow or
stalled database never holds a charger the back-office accepted: its lookup gets `LOOKUP_GRACE`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from proxy.forward.dial import Dialer, Dialled
from proxy.forward.policy import is_outage_outcome
from proxy.forward.refusal import CHALLENGE, Refusal, refused, retry_after
from proxy.outbox.store import Lookup, OutboxStore, StoreUnavailable
from proxy.routing.auth import CredentialVerifier, decide_auth
from proxy.routing.client_cert import Binding, ClientCertificate, bind, forwarded_identity
from proxy.routing.password_gate import Check, PasswordGate, Verdict
from proxy.routing.router import Router
from proxy.runtime.config import ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from proxy.wire.handshake import ChargerRequest, upstream_offer

log = logging.getLogger("proxy.server")

# a charger refused offline may try again then (its own queue holds its CALLs)
OFFLINE_RETRY_AFTER = 30.0
LOOKUP_GRACE = 1.0  # once the upstream accepted a charger, how long its lookup may still take


@dataclass
class Admitted:
    """A charger admitted: its OCPP version, what to send upstream, and the upstream (None: offline).

    `proof` says how its identity was proven (`outbox.policy.PROOFS`): what the outbox records
    with every CALL it queues for this connection.
    """

    version: str
    authorization: bytes | None
    upstream: trio.abc.Stream | None
    trailing: bytes
    needs_outbox: bool = False
    proof: str = "upstream"
    # The identity its client certificate was verified for, told to back-offices that ask for it
    # (`Route.forward_client_identity`); None without a verified certificate.
    client_identity: str | None = None


class Admission:
    """See the module docstring. `outbox` None: an unreachable upstream refuses the charger."""

    def __init__(
        self,
        settings: ProxySettings,
        router: Router,
        dialer: Dialer,
        metrics: ProxyMetrics,
        outbox: OutboxStore | None = None,
        verifier: CredentialVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.dialer = dialer
        self.outbox = outbox
        self.metrics = metrics
        self.passwords = PasswordGate()
        # Passthrough chargers: digests of the headers back-offices accepted (offline admission).
        self.verifier = verifier or CredentialVerifier.random()
        self.draining = False

    async def admit(
        self, request: ChargerRequest, address: str, certificate: ClientCertificate | None = None
    ) -> Admitted:
        """Admit the charger from client `address`, or raise its `Refusal` (module docstring).

        `certificate`: the client certificate the TLS layer verified (None: none presented).
        """
        if self.draining:
            raise refused(503, "shutting down", "shutting_down", retry_after(5))
        identity = request.identity
        rule = self.settings.client_cert_identity
        binding = bind(rule, identity, certificate)
        if binding is Binding.MISMATCH:
            raise refused(
                403, "client certificate not issued to this identity", "client_cert_mismatch"
            )
        route = self.router.lookup(identity)
        if route is None:
            raise refused(404, "unknown charger", "not_found")
        certified = binding is Binding.BOUND
        auth = decide_auth(route, identity, request.authorization, certified)
        if auth.status == 403:
            raise refused(403, "client certificate required", "client_cert_required")
        if auth.status is None and auth.password_to_verify is not None:
            assert route.password_hash is not None
            await self._check_password(
                identity, auth.password_to_verify, route.password_hash, address
            )
        if auth.status is not None:
            raise refused(401, "unauthorized", "unauthorized", CHALLENGE)
        client_identity = forwarded_identity(rule, identity, certificate)
        offer = upstream_offer(request.offered, self.settings.default_subprotocol)
        authorization = auth.upstream_authorization
        store = self.outbox
        if store is None:
            stream, accepted, trailing = await self.dialer.dial(
                route, identity, offer, authorization, client_identity=client_identity
            )
            return Admitted(
                self._version(accepted.subprotocol),
                authorization,
                stream,
                trailing,
                client_identity=client_identity,
            )
        lookup, dialled, refusal = await self._dial_and_look_up(
            store, route, identity, offer, authorization, client_identity
        )
        if refusal is not None:
            if not is_outage_outcome(refusal.outcome):
                raise refusal
            proof = self.offline_proof(route, request, lookup, certified)
            log.info(
                "upstream unreachable: admitting offline",
                extra={"identity": identity, "proof": proof},
            )
            return Admitted(
                offer[0],
                authorization,
                None,
                b"",
                needs_outbox=True,
                proof=proof,
                client_identity=client_identity,
            )
        assert dialled is not None
        stream, accepted, trailing = dialled
        if route.auth == "passthrough" and request.authorization:
            # The back-office accepted this header: what proves the charger while it is unreachable.
            stored = lookup.verifier if lookup is not None else None
            if not self.verifier.current(identity, request.authorization, stored):
                store.remember_verifier(
                    identity, self.verifier.digest(identity, request.authorization)
                )
        needs_outbox = lookup is not None and lookup.needs_outbox
        return Admitted(
            self._version(accepted.subprotocol),
            authorization,
            stream,
            trailing,
            needs_outbox,
            client_identity=client_identity,
        )

    def _version(self, chosen: str | None) -> str:
        return chosen or self.settings.default_subprotocol

    async def _dial_and_look_up(
        self,
        store: OutboxStore,
        route: Route,
        identity: str,
        offer: list[str],
        authorization: bytes | None,
        client_identity: str | None,
    ) -> tuple[Lookup | None, Dialled | None, Refusal | None]:
        """Dial while the store is asked about the charger; (lookup, dialled, refusal).

        The refusal is returned, not raised: raised inside the nursery it would come out in an
        exception group. A lookup that fails or is late is None.
        """
        lookup: Lookup | None = None
        dialled: Dialled | None = None
        refusal: Refusal | None = None
        looked_up = trio.Event()

        async def look_up() -> None:
            nonlocal lookup
            try:
                lookup = await store.look_up(identity)
            except StoreUnavailable as exc:
                log.warning("outbox lookup failed", extra={"identity": identity, "error": str(exc)})
            looked_up.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(look_up)
                try:
                    dialled = await self.dialer.dial(
                        route, identity, offer, authorization, client_identity=client_identity
                    )
                except Refusal as refused_by:
                    refusal = refused_by
                else:
                    with trio.move_on_after(LOOKUP_GRACE):
                        await looked_up.wait()
                    nursery.cancel_scope.cancel()
        except BaseException:
            if dialled is not None:
                await trio.aclose_forcefully(dialled[0])
            raise
        return lookup, dialled, refusal

    def offline_proof(
        self,
        route: Route,
        request: ChargerRequest,
        lookup: Lookup | None,
        certified: bool = False,
    ) -> str:
        """How a charger proves its identity while its upstream is unreachable, or its refusal.

        Security profile 3: its bound client certificate (`certified`, checked already).
        `managed`: its password (checked already). `passthrough`: the Authorization header whose
        digest was stored when the back-office last accepted it. Without proof the charger is
        refused (503 with Retry-After): its own offline queue keeps its CALLs meanwhile.
        """
        if route.security_profile == 3 and certified:
            return "certificate"
        if route.auth == "managed":
            return "password"
        later = retry_after(OFFLINE_RETRY_AFTER)
        if lookup is None:
            raise refused(503, "proxy queue unavailable", "store_unavailable", later)
        if not self.verifier.matches(request.identity, request.authorization, lookup.verifier):
            raise refused(503, "back-office unreachable", "offline_unproven", later)
        return "verifier"

    async def _check_password(
        self, identity: str, password: str, encoded: str, address: str
    ) -> None:
        """Raise the refusal for a managed charger's password unless it is right (`PasswordGate`)."""
        check = None
        with trio.move_on_after(self.settings.handshake_timeout):
            check = await self.passwords.check(identity, password, encoded, address)
        if check is None:  # queued behind a flood of logins for the whole handshake timeout
            check = Check(Verdict.BUSY, self.settings.handshake_timeout)
        self.metrics.password_checks.labels(
            check.verdict.value, "yes" if check.hashed else "no"
        ).inc()
        if check.verdict is Verdict.WRONG:
            raise refused(401, "unauthorized", "unauthorized", CHALLENGE)
        if check.verdict is Verdict.RATE_LIMITED:
            raise refused(
                429, "too many failed attempts", "rate_limited", retry_after(check.retry_after)
            )
        if check.verdict is Verdict.BUSY:
            raise refused(503, "busy, retry later", "busy", retry_after(check.retry_after))
