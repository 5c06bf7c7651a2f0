package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
)

// ---- IdP side ----

type authenticationRequest struct {
	LoginHint       string  `json:"login_hint"`
	BindingMessage  *string `json:"binding_message"`
	RequestedExpiry *int    `json:"requested_expiry"`
	RedirectURI     string  `json:"redirect_uri"`
}

func (s *Server) createAuthentication(c *gin.Context) error {
	client := c.MustGet(ctxClient).(*Client)
	var req authenticationRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := s.challenges.Create(c.Request.Context(), challenge.CreateRequest{
		Client:    challenge.Client{ID: client.ID, Name: client.Name, RedirectURIs: client.RedirectURIs},
		LoginHint: req.LoginHint, BindingMessage: req.BindingMessage, RequestedExpiry: req.RequestedExpiry,
		RedirectURI: req.RedirectURI,
	})
	if err != nil {
		s.countLimit(err)
		return err
	}
	kind := "push"
	if req.LoginHint == "" {
		kind = "qr"
	}
	s.metrics.authentications.WithLabelValues(kind).Inc()
	c.JSON(http.StatusCreated, out)
	return nil
}

// approvedResult is the IdP's one successful poll.
type approvedResult struct {
	Status   string   `json:"status"`
	Sub      string   `json:"sub"`
	AuthTime int64    `json:"auth_time"`
	AMR      []string `json:"amr"`
	DeviceID string   `json:"device_id"`
	// Identity is the practitioner's directory entry, when one is loaded.
	Identity json.RawMessage `json:"identity,omitempty"`
}

func (s *Server) pollAuthentication(c *gin.Context) error {
	client := c.MustGet(ctxClient).(*Client)
	var wait time.Duration
	if w := c.Query("wait"); w != "" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 || n > 30 {
			return invalidRequest("wait must be 1..30 seconds")
		}
		wait = time.Duration(n) * time.Second
	}
	res, err := s.challenges.Poll(c.Request.Context(), client.ID, c.Param("auth_req_id"), wait)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, approvedResult{Status: "approved", Sub: res.Subject, AuthTime: res.AuthTime.Unix(),
		AMR: challenge.AMR(res.UV), DeviceID: res.DeviceID, Identity: res.Identity})
	return nil
}

func (s *Server) cancelAuthentication(c *gin.Context) error {
	client := c.MustGet(ctxClient).(*Client)
	if err := s.challenges.Cancel(c.Request.Context(), client.ID, c.Param("auth_req_id")); err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

// ---- Device side ----

func deviceOf(c *gin.Context) challenge.Device {
	d := c.MustGet(ctxDevice).(enrollment.Device)
	return challenge.Device{ID: d.DeviceID, Subject: d.Subject}
}

type challengeList struct {
	Challenges []challenge.Challenge `json:"challenges"`
}

func (s *Server) listChallenges(c *gin.Context) error {
	list, err := s.challenges.Pending(c.Request.Context(), deviceOf(c).Subject, prefetched(c))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, challengeList{Challenges: list})
	return nil
}

func (s *Server) getChallenge(c *gin.Context) error {
	ch, err := s.challenges.ChallengeFor(c.Request.Context(), deviceOf(c).Subject, c.Param("challenge_id"), prefetched(c))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, ch)
	return nil
}

type responseBody struct {
	Response string `json:"response"`
}

func (s *Server) respondChallenge(c *gin.Context) error {
	var req responseBody
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if err := s.challenges.Respond(c.Request.Context(), deviceOf(c), c.Param("challenge_id"), req.Response, pendingProof(c)); err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

type claimBody struct {
	QRToken string `json:"qr_token"`
}

func (s *Server) claimChallenge(c *gin.Context) error {
	var req claimBody
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ch, err := s.challenges.Claim(c.Request.Context(), deviceOf(c), req.QRToken)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, ch)
	return nil
}

// ---- QR login page data ----

func (s *Server) loginState(c *gin.Context) error {
	st, err := s.challenges.Login(c.Request.Context(), c.Param("login_id"))
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, st)
	return nil
}

func (s *Server) loginQR(c *gin.Context) error {
	png, _, err := s.challenges.LoginQR(c.Request.Context(), c.Param("login_id"))
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.Data(http.StatusOK, "image/png", png)
	return nil
}

// countLimit counts a limit hit by its name.
func (s *Server) countLimit(err error) {
	var limit *challenge.LimitError
	if errors.As(err, &limit) {
		s.metrics.limitHits.WithLabelValues(limit.Limit).Inc()
	}
}
