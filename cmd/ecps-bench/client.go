package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

const maxBody = 1 << 20

// apiClient sends the bench's requests: the IdP's (HTTP Basic), the desk's
// (Bearer) and the phones' (ECPS-Proof), over one keep-alive transport.
type apiClient struct {
	hc                     *http.Client
	clientID, clientSecret string
	deskKey                string
	timeout                time.Duration // of one request, long-polls apart
}

func newTransport(maxConns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil, // loopback only: never through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
}

func newAPIClient(cred credentials, maxConns int, timeout time.Duration) *apiClient {
	return &apiClient{
		hc: &http.Client{
			Transport:     newTransport(maxConns),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		clientID: cred.ClientID, clientSecret: cred.ClientSecret, deskKey: cred.DeskKey, timeout: timeout,
	}
}

// who signs a request.
type auth interface {
	authorize(r *http.Request, body []byte) error
}

type idpAuth struct{ c *apiClient }

func (a idpAuth) authorize(r *http.Request, _ []byte) error {
	r.SetBasicAuth(a.c.clientID, a.c.clientSecret)
	return nil
}

type deskAuth struct{ c *apiClient }

func (a deskAuth) authorize(r *http.Request, _ []byte) error {
	r.Header.Set("Authorization", "Bearer "+a.c.deskKey)
	return nil
}

type deviceAuth struct{ s *signer }

func (a deviceAuth) authorize(r *http.Request, body []byte) error {
	p, err := a.s.proof(r.Method, r.URL.Path, body, time.Now())
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", p)
	return nil
}

type noAuth struct{}

func (noAuth) authorize(*http.Request, []byte) error { return nil }

// reply is an HTTP answer: its status, body and, for an error body of the
// contract, its "error" code.
type reply struct {
	status int
	body   []byte
	code   string
}

// call sends one request with its own timeout (d, or the client's when 0)
// and reads the whole answer.
func (c *apiClient) call(ctx context.Context, method, url string, body any, a auth, d time.Duration) (reply, error) {
	var payload []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return reply{}, err
		}
	}
	if d == 0 {
		d = c.timeout
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("User-Agent", "ecps-bench")
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := a.authorize(req, payload); err != nil {
		return reply{}, err
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return reply{status: res.StatusCode}, err
	}
	r := reply{status: res.StatusCode, body: data}
	if res.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil {
			r.code = e.Error
		}
	}
	return r, nil
}

// errorKind names what went wrong in a step, for the report's error
// counts: "<step>:<contract error code>", "<step>:http_<status>",
// "<step>:timeout" or "<step>:transport".
func errorKind(step string, r reply, err error) string {
	switch {
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)):
		return step + ":timeout"
	case err != nil && errors.Is(err, context.Canceled):
		return step + ":cancelled"
	case err != nil:
		return step + ":transport"
	case r.code != "":
		return step + ":" + r.code
	default:
		return fmt.Sprintf("%s:http_%d", step, r.status)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// describe is a short text of an unexpected answer, for fatal errors.
func (r reply) describe() string {
	return fmt.Sprintf("HTTP %d %s", r.status, strings.TrimSpace(string(r.body[:min(len(r.body), 300)])))
}
