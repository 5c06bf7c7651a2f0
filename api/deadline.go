package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// DefaultRequestBudget bounds the storage time of a request: go-redis resends
// a command after a network error (up to 3 times, each waiting up to its read
// timeout), and without a deadline a slow Redis would hold a request for many
// seconds before its 503.
const DefaultRequestBudget = 2 * time.Second

// maxWait is the longest long-poll (?wait=30).
const maxWait = 30 * time.Second

// pollRoute is the IdP's poll, which may wait: its deadline is the budget
// plus the longest wait, and each of its reads has a budget of its own
// (challenge.Options.ReadBudget).
const pollRoute = "/api/v1/authentications/:auth_req_id"

// deadline gives every request a context that ends after the budget: every
// Redis command it sends, resends included, ends by then, and the request
// answers 503 unavailable (context.DeadlineExceeded) instead of waiting.
func (s *Server) deadline(c *gin.Context) {
	budget := s.budget
	if c.Request.Method == http.MethodGet && c.FullPath() == pollRoute {
		budget += maxWait
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), budget)
	defer cancel()
	c.Request = c.Request.WithContext(ctx)
	c.Next()
}
