package keycloak

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/idnat"
)

// Logins is what the channel needs of the login service (challenge.Service).
type Logins interface {
	Create(ctx context.Context, req challenge.CreateRequest) (challenge.Created, error)
	Cancel(ctx context.Context, clientID, authReqID string) error
}

// ChannelOptions tune the channel; zero values take the defaults.
type ChannelOptions struct {
	// MinLife is the shortest life of a login: a token about to expire
	// (or just expired, within the leeway: Keycloak's clock may be behind)
	// still gives the user this long; default 10 s.
	MinLife time.Duration
	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
}

// Channel is the authentication device side of Keycloak's CIBA HTTP
// authentication channel: it takes Keycloak's channel requests and starts
// push logins whose outcome the Callbacks queue sends back.
type Channel struct {
	verifier  *Verifier
	logins    Logins
	callbacks *Callbacks
	opts      ChannelOptions
}

// NewChannel returns the channel.
func NewChannel(verifier *Verifier, logins Logins, callbacks *Callbacks, opts ChannelOptions) *Channel {
	if opts.MinLife <= 0 {
		opts.MinLife = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Channel{verifier: verifier, logins: logins, callbacks: callbacks, opts: opts}
}

// Accepted is the outcome of a channel request answered 201.
type Accepted struct {
	ChallengeID string // the login's, "" when it could not start
	// Refused is why the login could not start (challenge.ErrUnknownUser,
	// challenge.ErrNoActiveDevice, *challenge.LimitError): Keycloak is then
	// called back with UNAUTHORIZED.
	Refused error
}

// Accept handles one channel request: authorization is the request's
// Authorization header, body its body. Errors: *TokenError
// (ErrInvalidToken), ErrInvalidRequest, ErrNumberRequired,
// challenge.ErrBindingMessage, or a storage error. A nil error means 201.
func (ch *Channel) Accept(ctx context.Context, authorization string, body []byte) (Accepted, error) {
	out, err := ch.accept(ctx, authorization, body)
	if m := ch.opts.Metrics; m != nil {
		switch {
		case err == nil && out.Refused != nil:
			m.requests.WithLabelValues(RequestRefused).Inc()
		case err == nil:
			m.requests.WithLabelValues(RequestAccepted).Inc()
		case ReasonOf(err) != "":
			m.requests.WithLabelValues(RequestToken).Inc()
			m.rejections.WithLabelValues(ReasonOf(err)).Inc()
		case errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrNumberRequired) ||
			errors.Is(err, challenge.ErrBindingMessage) || errors.Is(err, challenge.ErrInvalid):
			m.requests.WithLabelValues(RequestInvalid).Inc()
		default:
			m.requests.WithLabelValues(RequestError).Inc()
		}
	}
	return out, err
}

func (ch *Channel) accept(ctx context.Context, authorization string, body []byte) (Accepted, error) {
	raw, err := bearer(authorization)
	if err != nil {
		return Accepted{}, err
	}
	tok, realm, err := ch.verifier.Verify(ctx, raw)
	if err != nil {
		return Accepted{}, err
	}
	req, err := ParseChannelRequest(body)
	if err != nil {
		return Accepted{}, err
	}
	subject, err := realm.subject(req.LoginHint)
	if err != nil {
		return Accepted{}, err
	}
	number, shown, err := realm.bindingTerms(req.BindingMessage)
	if err != nil {
		return Accepted{}, err
	}
	now := ch.opts.Now()
	expires := tok.ExpiresAt
	if d := expires.Sub(now); d < ch.opts.MinLife {
		expires = now.Add(ch.opts.MinLife)
	} else if d > challenge.MaxDelegatedLife {
		expires = now.Add(challenge.MaxDelegatedLife)
	}
	client := challenge.Client{ID: challenge.KeycloakClientPrefix + tok.AZP, Name: realm.clientName(tok.AZP)}
	// The callback is tried until the token's exp, or the login's end when
	// that is later (a token accepted within the leeway: Keycloak's clock
	// may be behind ours).
	j := &job{URL: realm.callbackURL(), Token: raw, Subject: subject, Issuer: realm.Issuer, AZP: tok.AZP,
		Expires: tok.ExpiresAt}
	if expires.After(j.Expires) {
		j.Expires = expires
	}
	created, err := ch.logins.Create(ctx, challenge.CreateRequest{Client: client, LoginHint: subject, BindingMessage: shown,
		Delegated: &challenge.Delegated{ExpiresAt: expires, Number: number}})
	log := ch.opts.Logger.With("issuer", realm.Issuer, "azp", tok.AZP, "subject", idnat.Mask(subject))
	if why := refusal(err); why != "" {
		j.ID, j.Why, j.Accepted = refusedID(realm.Issuer, tok.JTI), why, ch.opts.Now()
		if rerr := ch.callbacks.refuse(ctx, j); rerr != nil {
			return Accepted{}, rerr
		}
		log.Info("keycloak: login could not start; the callback says UNAUTHORIZED", "reason", why)
		return Accepted{Refused: err}, nil
	}
	if err != nil {
		return Accepted{}, err
	}
	j.ID, j.Accepted = created.ChallengeID, ch.opts.Now()
	if err := ch.callbacks.expect(ctx, j); err != nil {
		// Keycloak gets an error and forgets the request: cancel the login,
		// which nobody would hear of.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		if cerr := ch.logins.Cancel(cctx, client.ID, created.AuthReqID); cerr != nil {
			log.Warn("keycloak: cannot cancel a login whose callback was not recorded", "challenge_id", created.ChallengeID, "err", cerr)
		}
		cancel()
		return Accepted{}, err
	}
	log.Info("keycloak: push login started", "challenge_id", created.ChallengeID, "number_digits", len(number))
	return Accepted{ChallengeID: created.ChallengeID}, nil
}

// refusal names why a login could not start, "" when it did or for
// another error.
func refusal(err error) string {
	var limit *challenge.LimitError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, challenge.ErrUnknownUser):
		return "unknown_user_id"
	case errors.Is(err, challenge.ErrNoActiveDevice):
		return "no_active_device"
	case errors.As(err, &limit):
		return "limit:" + limit.Limit
	}
	return ""
}

// refusedID names the job of a login that could not start, from Keycloak's
// id of the CIBA request (the token's jti): a request accepted again names
// the same job.
func refusedID(issuer, jti string) string {
	sum := sha256.Sum256([]byte(issuer + "\n" + jti))
	return "kcr_" + hex.EncodeToString(sum[:16])
}
