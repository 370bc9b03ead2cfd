// Package fakeclaude is a local stand-in for the Anthropic Messages API: real HTTP
// on the loopback interface, the API's request validation, error shapes and
// streaming events, and a deterministic model that drives the demo's tool-using
// conversation (a question gets a get_security_alerts tool_use; the tool's result
// gets an answer that summarizes it). Faults can be queued per request so tests can
// watch a proxy retry, and every request is logged.
package fakeclaude

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Model is the model id the fake lists; any model name is accepted.
const Model = "claude-fake-1"

// maxBody bounds request bodies, as the API does (it answers 413 beyond its limit).
const maxBody = 32 << 20

// Options configure Start.
type Options struct {
	// Addr to listen on; "127.0.0.1:0" when empty.
	Addr string
	// APIKey, when set, is the only key accepted (as x-api-key or Authorization:
	// Bearer); other keys get a 401. When empty any non-empty key is accepted.
	APIKey string
	// Clock times Fault.Delay; the real clock when nil.
	Clock clock.Clock
}

// Request is one logged request. Keys are never kept, only how they came.
type Request struct {
	// Seq numbers requests from 1, in arrival order.
	Seq    int
	Method string
	Path   string
	// Auth is "x-api-key", "bearer" or "" (no key).
	Auth string
	// Stream is the body's "stream".
	Stream bool
	Model  string
	// Messages is the number of messages in the body.
	Messages int
	// Fault is the Name of the fault applied, if any.
	Fault string
	// Status is the HTTP status answered (0 when the connection was reset).
	Status int
	// Outcome is "tool_use" or "end_turn" for an answer, the error type for an API
	// error (also in-band), "reset" or "cut".
	Outcome string
}

// Server is a running fake Anthropic API.
type Server struct {
	opts Options
	ln   net.Listener
	hs   *http.Server

	mu       sync.Mutex
	faults   []Fault
	requests []Request
	seq      int
}

// Start listens and serves.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", opts.Addr, err)
	}
	s := &Server{opts: opts, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/messages", s.messages)
	mux.HandleFunc("/v1/messages/count_tokens", s.countTokens)
	mux.HandleFunc("/v1/models", s.models)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.log(r, nil, "", http.StatusNotFound, "not_found_error")
		writeError(w, 0, http.StatusNotFound, "not_found_error", "Not found", nil)
	})
	s.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.hs.Serve(ln) }()
	return s, nil
}

// URL is the base URL to give a client (as ANTHROPIC_BASE_URL): http://127.0.0.1:PORT.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and cuts open connections.
func (s *Server) Close() error { return s.hs.Close() }

// Inject queues faults for the next requests to /v1/messages, one each, in order.
func (s *Server) Inject(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// PendingFaults is the number of queued faults not applied yet.
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults)
}

// Requests returns the request log so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ResetLog forgets the logged requests (sequence numbers continue).
func (s *Server) ResetLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = s.requests[:0:0]
}

func (s *Server) log(r *http.Request, body *messagesRequest, fault string, status int, outcome string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	n := s.seq
	entry := Request{Seq: n, Method: r.Method, Path: r.URL.Path, Auth: authScheme(r), Fault: fault, Status: status, Outcome: outcome}
	if body != nil {
		entry.Stream, entry.Model, entry.Messages = body.Stream, body.Model, len(body.Messages)
	}
	s.requests = append(s.requests, entry)
	return n
}

func (s *Server) nextFault() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults) == 0 {
		return Fault{}, false
	}
	f := s.faults[0]
	s.faults = s.faults[1:]
	return f, true
}

func authScheme(r *http.Request) string {
	if r.Header.Get("x-api-key") != "" {
		return "x-api-key"
	}
	if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		return "bearer"
	}
	return ""
}

// checkHeaders answers 401/400 as the API does for missing credentials or version.
func (s *Server) checkHeaders(w http.ResponseWriter, r *http.Request) bool {
	key := r.Header.Get("x-api-key")
	if key == "" {
		key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if key == r.Header.Get("Authorization") {
			key = ""
		}
	}
	switch {
	case key == "":
		s.log(r, nil, "", http.StatusUnauthorized, "authentication_error")
		writeError(w, 0, http.StatusUnauthorized, "authentication_error", "x-api-key header is required", nil)
		return false
	case s.opts.APIKey != "" && key != s.opts.APIKey:
		s.log(r, nil, "", http.StatusUnauthorized, "authentication_error")
		writeError(w, 0, http.StatusUnauthorized, "authentication_error", "invalid x-api-key", nil)
		return false
	case r.Header.Get("anthropic-version") == "":
		s.log(r, nil, "", http.StatusBadRequest, "invalid_request_error")
		writeError(w, 0, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required", nil)
		return false
	}
	return true
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (*messagesRequest, bool) {
	if r.Method != http.MethodPost {
		s.log(r, nil, "", http.StatusMethodNotAllowed, "invalid_request_error")
		writeError(w, 0, http.StatusMethodNotAllowed, "invalid_request_error", "Method Not Allowed", nil)
		return nil, false
	}
	if !s.checkHeaders(w, r) {
		return nil, false
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		s.log(r, nil, "", http.StatusRequestEntityTooLarge, "request_too_large")
		writeError(w, 0, http.StatusRequestEntityTooLarge, "request_too_large", "Request exceeds the maximum allowed number of bytes.", nil)
		return nil, false
	}
	var body messagesRequest
	if err := json.Unmarshal(raw, &body); err != nil {
		s.log(r, nil, "", http.StatusBadRequest, "invalid_request_error")
		writeError(w, 0, http.StatusBadRequest, "invalid_request_error", "There was an error parsing the body of your request: "+err.Error(), nil)
		return nil, false
	}
	return &body, true
}

func (s *Server) countTokens(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	s.log(r, body, "", http.StatusOK, "count_tokens")
	writeJSON(w, http.StatusOK, map[string]any{"input_tokens": tokens(body)})
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	if !s.checkHeaders(w, r) {
		return
	}
	s.log(r, nil, "", http.StatusOK, "models")
	writeJSON(w, http.StatusOK, map[string]any{
		"data":     []map[string]any{{"type": "model", "id": Model, "display_name": "Fake Claude", "created_at": "2026-01-01T00:00:00Z"}},
		"has_more": false, "first_id": Model, "last_id": Model,
	})
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	fault, faulty := s.nextFault()
	if faulty && fault.Delay > 0 {
		select {
		case <-s.opts.Clock.After(fault.Delay):
		case <-r.Context().Done():
			s.log(r, body, fault.Name, 0, "client_gone")
			return
		}
	}
	for k, v := range fault.Header {
		w.Header().Set(k, v)
	}
	switch {
	case fault.Reset:
		s.log(r, body, fault.Name, 0, "reset")
		resetConnection(w)
		return
	case fault.Status != 0:
		n := s.log(r, body, fault.Name, fault.Status, fault.ErrorType)
		writeError(w, n, fault.Status, fault.ErrorType, fault.Message, fault.Details)
		return
	case fault.InBand && !body.Stream:
		n := s.log(r, body, fault.Name, 529, fault.ErrorType)
		writeError(w, n, 529, fault.ErrorType, fault.Message, nil)
		return
	}
	if err := body.validate(); err != nil {
		n := s.log(r, body, fault.Name, http.StatusBadRequest, "invalid_request_error")
		writeError(w, n, http.StatusBadRequest, "invalid_request_error", err.Error(), nil)
		return
	}
	blocks, stop := reply(body)
	outcome := stop
	switch {
	case fault.InBand:
		outcome = fault.ErrorType
	case fault.CutAfterDeltas > 0:
		outcome = "cut"
	}
	n := s.log(r, body, fault.Name, http.StatusOK, outcome)
	msg := message{
		ID: fmt.Sprintf("msg_fake%06d", n), Type: "message", Role: "assistant", Model: body.Model,
		Content: blocks, StopReason: &stop,
		Usage: usage{InputTokens: tokens(body), OutputTokens: outputTokens(blocks)},
	}
	w.Header().Set("request-id", requestID(n))
	if body.Stream {
		streamMessage(w, msg, fault)
		return
	}
	raw, _ := json.Marshal(msg)
	w.Header().Set("Content-Type", "application/json")
	if fault.CutAfterDeltas > 0 {
		w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(raw[:len(raw)/2])
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // cuts the connection mid-body
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
}

// resetConnection closes the connection with SO_LINGER 0, so the client sees a
// reset rather than a clean end.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

type usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

type message struct {
	ID           string     `json:"id"`
	Type         string     `json:"type"`
	Role         string     `json:"role"`
	Model        string     `json:"model"`
	Content      []outBlock `json:"content"`
	StopReason   *string    `json:"stop_reason"`
	StopSequence *string    `json:"stop_sequence"`
	Usage        usage      `json:"usage"`
}

// tokens is a deterministic stand-in for the tokenizer: about four bytes a token.
func tokens(body *messagesRequest) int {
	raw, _ := json.Marshal(body)
	return len(raw)/4 + 1
}

func outputTokens(blocks []outBlock) int {
	raw, _ := json.Marshal(blocks)
	return len(raw)/4 + 1
}

func requestID(n int) string { return fmt.Sprintf("req_fake%06d", n) }

type apiError struct {
	Type      string   `json:"type"`
	Error     errorObj `json:"error"`
	RequestID string   `json:"request_id,omitempty"`
}

type errorObj struct {
	Type    string         `json:"type"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

func writeError(w http.ResponseWriter, n, status int, errType, msg string, details map[string]any) {
	id := requestID(n)
	if n == 0 {
		id = "req_fake_unlogged"
	}
	w.Header().Set("request-id", id)
	writeJSON(w, status, apiError{Type: "error", Error: errorObj{Type: errType, Message: msg, Details: details}, RequestID: id})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
