// Package keycloak makes the service the "authentication device" of
// Keycloak's CIBA HTTP authentication channel (provider
// ciba-http-auth-channel): a Keycloak realm delegates a CIBA login to
// POST /api/v1/keycloak/ciba, the practitioner approves it on their phone,
// and the outcome goes back to the realm's callback endpoint. No Keycloak
// code is needed; docs/keycloak.md gives the settings.
//
// # The request (Channel)
//
// Keycloak POSTs {"login_hint","scope","is_consent_required",
// "binding_message"?,"acr_values"?,…} with the Bearer of a token it signs
// with the realm's key: iss and aud the realm's issuer, azp the CIBA
// client, jti its id of the request, exp the request's expiry, typ
// "Bearer". The Verifier checks it against the realm named by iss (a key
// of its JWKS, cached, fetched again on an unknown kid at most every 10 s
// and every hour; RS256, PS256 or ES256); the login_hint, less the realm's
// prefix, must be an idNat. A push login is then created by
// challenge.Service.Create, exactly as for an IdP client ("keycloak:<azp>"),
// with Keycloak's expiry and with the binding message as the number when it
// is 2 to 6 digits (the phone types it; any other message is shown, with no
// number to type). The answer is 201 even when the login cannot start (no
// device, a limit): the callback then says UNAUTHORIZED.
//
// # The callback (Callbacks)
//
// Keycloak stores the CIBA request only after it has read our 201, and
// cancels an approved request if it is called back a second time. So each
// login has one job in Redis ({kc}:job:<challenge_id>):
//
//	waiting ──(the phone's decision: challenge's OnKeycloakDecision hook)──▶ queued
//	(login could not start) ──(FirstDelay after the 201)──▶ queued UNAUTHORIZED
//	queued ──(due: any replica claims it; lease)──▶ sending
//	sending ──(2xx)──▶ sent (audited keycloak.callback_sent)
//	sending ──(nothing written: connection refused…; 5xx but 504; 403 within
//	          StoreWindow of the 201)──▶ queued again, with backoff, until the token's exp
//	sending ──(403 later, 400, 401, other 4xx; no time left)──▶ failed (keycloak.callback_failed)
//	sending ──(timeout, reset or 504 once the request was written)──▶
//	          SUCCEED: unknown (keycloak.callback_unknown), never sent again;
//	          UNAUTHORIZED: queued again (Keycloak takes repeats of it)
//	sending ──(its replica vanished: the lease ends)──▶ claimed again, "stale":
//	          a stale SUCCEED is unknown (it may have been sent), an UNAUTHORIZED is sent
//	waiting ──(the login expires: Keycloak's request expires with it)──▶ gone (TTL)
//
// Every step is one Lua script on the {kc} hash tag that names its
// operation (the claim's op, stored in the job): run again after a lost
// reply, it answers as the first run did. The decision hook runs after the
// decision's audit entry and before the result is readable; run again (the
// phone sends its decision again), it changes nothing.
package keycloak
