package keycloak

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
)

// ErrInvalidRequest: the channel request's body is not what Keycloak sends.
var ErrInvalidRequest = errors.New("invalid channel request")

// ChannelRequest is the body of Keycloak's authentication channel request
// (its AuthenticationChannelRequest): login_hint (the Keycloak username),
// scope, is_consent_required, and optionally binding_message and
// acr_values. Keycloak adds the CIBA request's other parameters as extra
// members; they are ignored.
type ChannelRequest struct {
	LoginHint       string
	BindingMessage  *string // nil: none
	Scope           string
	ConsentRequired bool
	ACRValues       string
}

// maxField bounds each string member (Keycloak's are far shorter).
const maxField = 4096

// ParseChannelRequest reads a channel request body: one JSON object,
// nothing after it; login_hint a non-empty string; binding_message, scope
// and acr_values strings or null; is_consent_required a boolean or null.
func ParseChannelRequest(body []byte) (ChannelRequest, error) {
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil || m == nil {
		return ChannelRequest{}, errorf(ErrInvalidRequest, "body must be a JSON object")
	}
	// dec.More misses a stray "}" or "]": only the end of the input will do.
	if _, err := dec.Token(); err != io.EOF {
		return ChannelRequest{}, errorf(ErrInvalidRequest, "trailing data after the JSON body")
	}
	var r ChannelRequest
	str := func(name string, required bool) (*string, error) {
		raw, ok := m[name]
		if !ok || string(raw) == "null" {
			if required {
				return nil, errorf(ErrInvalidRequest, "%s is required", name)
			}
			return nil, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || len(s) > maxField || !utf8.ValidString(s) {
			return nil, errorf(ErrInvalidRequest, "%s must be a string", name)
		}
		return &s, nil
	}
	hint, err := str("login_hint", true)
	if err != nil {
		return ChannelRequest{}, err
	}
	if *hint == "" {
		return ChannelRequest{}, errorf(ErrInvalidRequest, "login_hint is required")
	}
	r.LoginHint = *hint
	if r.BindingMessage, err = str("binding_message", false); err != nil {
		return ChannelRequest{}, err
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"scope", &r.Scope}, {"acr_values", &r.ACRValues}} {
		v, err := str(f.name, false)
		if err != nil {
			return ChannelRequest{}, err
		}
		if v != nil {
			*f.dst = *v
		}
	}
	if raw, ok := m["is_consent_required"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &r.ConsentRequired); err != nil {
			return ChannelRequest{}, errorf(ErrInvalidRequest, "is_consent_required must be a boolean")
		}
	}
	return r, nil
}
