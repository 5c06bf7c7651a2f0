package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
)

const (
	userAgent        = "ecps-device/0.1.0"
	maxResponseBytes = 1 << 20
)

// client talks to one e-CPS service. With a device key and id it signs the
// ECPS-Proof of every /api/v1/device/ request.
type client struct {
	baseURL  string // no trailing slash
	httpc    *http.Client
	deviceID string
	key      *ecdsa.PrivateKey
	now      func() time.Time
}

func newClient(baseURL string, timeout time.Duration) *client {
	return &client{
		baseURL: strings.TrimRight(baseURL, "/"),
		httpc: &http.Client{
			Timeout: timeout,
			// A redirect would change htu and re-send a proof elsewhere: never follow one.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
	}
}

// newDeviceClient is a client for the enrolled device of st.
func newDeviceClient(st *deviceState, timeout time.Duration) *client {
	c := newClient(st.Server, timeout)
	c.deviceID = st.DeviceID
	c.key = st.key
	return c
}

// apiError is a non-2xx answer. Code and Description come from the contract's
// {"error","error_description"} body when there is one.
type apiError struct {
	Status      int
	Code        string
	Description string
}

func (e *apiError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("unexpected response (HTTP %d)", e.Status)
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Description, e.Status)
}

func newAPIError(status int, body []byte) *apiError {
	var eb struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	e := &apiError{Status: status}
	if json.Unmarshal(body, &eb) == nil {
		e.Code = clean(eb.Error)
		e.Description = clean(eb.Description)
	}
	return e
}

// publicRequest sends an unauthenticated request (enrolment).
func (c *client) publicRequest(ctx context.Context, method, path string, body any) (*http.Response, []byte, error) {
	return c.do(ctx, method, path, body, false)
}

// deviceRequest sends a request signed with the device key. path is the
// request path from the service base URL (e.g. "/api/v1/device/devices").
// body is nil (no body), []byte or json.RawMessage (sent as is), or a value
// encoded as JSON; the proof's bh covers exactly the bytes sent. A non-2xx
// answer returns the response, its body and an *apiError.
func (c *client) deviceRequest(ctx context.Context, method, path string, body any) (*http.Response, []byte, error) {
	if c.key == nil || c.deviceID == "" {
		return nil, nil, errors.New("no enrolled device key")
	}
	return c.do(ctx, method, path, body, true)
}

func (c *client) do(ctx context.Context, method, path string, body any, signed bool) (*http.Response, []byte, error) {
	var payload []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
	case json.RawMessage:
		payload = b
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return nil, nil, fmt.Errorf("encode request: %w", err)
		}
	}
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if signed {
		// htu is the path the server sees, without query.
		proof, err := requestProof(c.key, c.deviceID, method, req.URL.Path, payload, c.now())
		if err != nil {
			return nil, nil, fmt.Errorf("sign request proof: %w", err)
		}
		req.Header.Set("Authorization", "ECPS-Proof "+proof)
	}
	resp, err := c.httpc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return resp, nil, fmt.Errorf("read response: %w", err)
	}
	if len(data) > maxResponseBytes {
		return resp, nil, fmt.Errorf("response larger than %d bytes", maxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp, data, newAPIError(resp.StatusCode, data)
	}
	return resp, data, nil
}

// expectStatus turns an unexpected 2xx status into an error.
func expectStatus(resp *http.Response, want int) error {
	if resp.StatusCode != want {
		return fmt.Errorf("unexpected HTTP %d, want %d", resp.StatusCode, want)
	}
	return nil
}

// clean makes server-provided text safe to print on a terminal: control
// and format characters (e.g. bidi overrides) become '?', and it is cut at
// 500 characters.
func clean(s string) string {
	const max = 500
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == unicode.ReplacementChar {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
