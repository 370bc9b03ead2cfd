package anthropic

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error types of the Anthropic API error shape
// {"type":"error","error":{"type":...,"message":...}}.
const (
	ErrInvalidRequest  = "invalid_request_error"
	ErrAuthentication  = "authentication_error"
	ErrRequestTooLarge = "request_too_large"
	ErrAPI             = "api_error"
	ErrOverloaded      = "overloaded_error"
	ErrRateLimit       = "rate_limit_error"
	ErrNotFound        = "not_found_error"
	ErrPermission      = "permission_error"
)

// TokenHeader carries the client's gateway token when Authorization and
// x-api-key hold the client's own Anthropic key (pass-through mode). It is
// never forwarded upstream.
const TokenHeader = "X-Selfheal-Token"

type apiError struct {
	Type  string      `json:"type"`
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// ErrorBody renders an error in the Anthropic shape.
func ErrorBody(typ, msg string) []byte {
	b, _ := json.Marshal(apiError{Type: "error", Error: errorDetail{Type: typ, Message: msg}})
	return b
}

// WriteError answers status with an Anthropic-shaped error, so every client
// SDK parses gateway errors like API errors.
func WriteError(w http.ResponseWriter, status int, typ, msg string) {
	b := ErrorBody(typ, msg)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// upstreamError is the part of an upstream error body the retry rule reads.
type upstreamError struct {
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
		Details struct {
			ErrorCode string `json:"error_code"`
		} `json:"details"`
	} `json:"error"`
}

func parseUpstreamError(body []byte) (upstreamError, bool) {
	var e upstreamError
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Type == "" {
		return e, false
	}
	return e, true
}
