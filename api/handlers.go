package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/idnat"
)

// decodeJSON reads the (already capped) body into v: one JSON object, with
// nothing after it but white space. It is the one place where request bodies
// are decoded. Unknown fields are ignored, for forward compatibility.
func decodeJSON(c *gin.Context, v any) error {
	body := requestBody(c)
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		// null, a list, a string: not the object every route takes.
		return invalidRequest("body must be a JSON object of the documented shape")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return invalidRequest("body must be a JSON object of the documented shape")
	}
	// dec.More is not enough: it is false before a stray "}" or "]".
	if _, err := dec.Token(); err != io.EOF {
		return invalidRequest("trailing data after the JSON body: send one JSON object")
	}
	return nil
}

func parseSubject(s string) (idnat.ID, error) {
	id, err := idnat.Parse(s)
	if err != nil {
		return idnat.ID{}, invalidRequest("subject must be an idNat: 8 + 11-digit RPPS (Luhn) or 0 + 9-digit ADELI")
	}
	return id, nil
}

// ---- Activations ----

type activationRequest struct {
	Subject string `json:"subject"`
}

func (s *Server) createActivationByClient(c *gin.Context) error {
	client := c.MustGet(ctxClient).(*Client)
	return s.createActivation(c, audit.Actor{Type: audit.ActorClient, ID: client.ID}, "client")
}

func (s *Server) createActivationByDesk(c *gin.Context) error {
	op := c.MustGet(ctxOperator).(*Operator)
	return s.createActivation(c, audit.Actor{Type: audit.ActorOperator, ID: op.Name}, "operator")
}

func (s *Server) createActivation(c *gin.Context, actor audit.Actor, by string) error {
	var req activationRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	subject, err := parseSubject(req.Subject)
	if err != nil {
		return err
	}
	a, err := s.enrollment.CreateActivation(c.Request.Context(), subject, actor)
	if err != nil {
		return err
	}
	s.metrics.activations.WithLabelValues(by).Inc()
	s.log.Info("activation created", "request_id", requestID(c), "activation_id", a.ActivationID,
		"subject", subject.Masked(), "actor_type", actor.Type, "actor_id", actor.ID)
	c.JSON(http.StatusCreated, a)
	return nil
}

func (s *Server) getActivation(c *gin.Context) error {
	a, err := s.enrollment.GetActivation(c.Request.Context(), c.Param("activation_id"))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, a)
	return nil
}

// ---- Enrolment ----

type enrolRequest struct {
	ActivationID string          `json:"activation_id"`
	Secret       string          `json:"secret"`
	Code         string          `json:"code"`
	PublicKey    json.RawMessage `json:"public_key"`
	Proof        string          `json:"proof"`
	Platform     string          `json:"platform"`
	Model        string          `json:"model"`
	AppVersion   string          `json:"app_version"`
	Push         *pushBody       `json:"push"`
}

type pushBody struct {
	Provider string `json:"provider"`
	Token    string `json:"token"`
}

type enrolResponse struct {
	DeviceID  string    `json:"device_id"`
	Subject   string    `json:"subject"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Server) enrol(c *gin.Context) error {
	var req enrolRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	in := enrollment.EnrolRequest{ActivationID: req.ActivationID, Secret: req.Secret, Code: req.Code,
		PublicKey: req.PublicKey, Proof: req.Proof, Platform: req.Platform, Model: req.Model,
		AppVersion: req.AppVersion}
	if req.Push != nil {
		in.PushProvider, in.PushToken = req.Push.Provider, req.Push.Token
		if in.PushProvider == "" {
			return invalidRequest("push.provider must be fcm")
		}
	}
	d, err := s.enrollment.Enrol(c.Request.Context(), in)
	if err != nil {
		s.metrics.enrolments.WithLabelValues(toError(err).Code).Inc()
		return err
	}
	s.metrics.enrolments.WithLabelValues("ok").Inc()
	s.log.Info("device enrolled", "request_id", requestID(c), "device_id", d.DeviceID, "subject", idnat.Mask(d.Subject))
	c.JSON(http.StatusCreated, enrolResponse{DeviceID: d.DeviceID, Subject: d.Subject, CreatedAt: d.CreatedAt})
	return nil
}

// ---- Devices ----

type deviceList struct {
	Devices []enrollment.Device `json:"devices"`
}

func (s *Server) deskListDevices(c *gin.Context) error {
	subject, err := parseSubject(c.Param("idNat"))
	if err != nil {
		return err
	}
	ds, err := s.enrollment.ListDevices(c.Request.Context(), subject.String())
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, deviceList{Devices: ds})
	return nil
}

// deskPractitioner serves the directory entry of a practitioner: what the
// desk operator checks against their ID card before activating a phone.
func (s *Server) deskPractitioner(c *gin.Context) error {
	subject, err := parseSubject(c.Param("idNat"))
	if err != nil {
		return err
	}
	if s.directory == nil {
		return directory.ErrNotLoaded
	}
	id, err := s.directory.Lookup(c.Request.Context(), subject.String())
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, id)
	return nil
}

func (s *Server) deskTransition(action string) func(c *gin.Context) error {
	return func(c *gin.Context) error {
		op := c.MustGet(ctxOperator).(*Operator)
		d, err := s.enrollment.Transition(c.Request.Context(), c.Param("device_id"), action,
			audit.Actor{Type: audit.ActorOperator, ID: op.Name}, "")
		if err != nil {
			return err
		}
		if action == enrollment.ActionRevoke {
			c.Status(http.StatusNoContent)
			return nil
		}
		c.JSON(http.StatusOK, d)
		return nil
	}
}

func (s *Server) deviceListDevices(c *gin.Context) error {
	me := c.MustGet(ctxDevice).(enrollment.Device)
	ds, err := s.enrollment.ListDevices(c.Request.Context(), me.Subject)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, deviceList{Devices: ds})
	return nil
}

func (s *Server) deviceRevoke(c *gin.Context) error {
	me := c.MustGet(ctxDevice).(enrollment.Device)
	_, err := s.enrollment.Transition(c.Request.Context(), c.Param("device_id"), enrollment.ActionRevoke,
		audit.Actor{Type: audit.ActorDevice, ID: me.DeviceID}, me.Subject)
	if err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

func (s *Server) setPushToken(c *gin.Context) error {
	me := c.MustGet(ctxDevice).(enrollment.Device)
	var req pushBody
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Provider != "fcm" {
		return invalidRequest("provider must be fcm")
	}
	if err := s.enrollment.SetPushToken(c.Request.Context(), me, req.Token); err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

// ---- Audit ----

type auditPage struct {
	Entries []audit.Entry `json:"entries"`
	Next    *string       `json:"next"`
}

func (s *Server) deskAudit(c *gin.Context) error {
	subject, err := parseSubject(c.Query("subject"))
	if err != nil {
		return err
	}
	limit := 50
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 200 {
			return invalidRequest("limit must be 1..200")
		}
		limit = n
	}
	entries, next, err := s.audit.List(c.Request.Context(), subject.String(), c.Query("before"), limit)
	if err != nil {
		return err
	}
	page := auditPage{Entries: entries}
	if next != "" {
		page.Next = &next
	}
	c.JSON(http.StatusOK, page)
	return nil
}
