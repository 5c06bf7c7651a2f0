package api

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/ecps-sante/ecps/keycloak"
)

// keycloakCIBA is Keycloak's CIBA HTTP authentication channel: the realm's
// Bearer is the credential (no client authentication), the answer 201 with
// no body, also when the login cannot start (the callback then says
// UNAUTHORIZED).
func (s *Server) keycloakCIBA(c *gin.Context) error {
	if s.keycloak == nil {
		c.Header("WWW-Authenticate", `Bearer error="invalid_token"`)
		return errBadKeycloakToken
	}
	res, err := s.keycloak.Accept(c.Request.Context(), c.GetHeader("Authorization"), requestBody(c))
	if err != nil {
		if errors.Is(err, keycloak.ErrInvalidToken) {
			s.log.Info("keycloak token rejected", "request_id", requestID(c), "reason", keycloak.ReasonOf(err))
			c.Header("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		return err
	}
	if res.Refused != nil {
		s.countLimit(res.Refused)
	} else {
		s.metrics.authentications.WithLabelValues("push").Inc()
	}
	c.Status(http.StatusCreated)
	return nil
}
