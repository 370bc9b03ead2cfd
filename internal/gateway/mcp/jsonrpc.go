package mcp

import (
	"encoding/json"
	"net/http"

	"github.com/selfheal-dev/selfheal/internal/sse"
)

// JSON-RPC error codes the proxy answers with.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	// codeUpstreamUnavailable: the upstream failed and was not (or could not be) healed.
	codeUpstreamUnavailable = -32001
	// codeHealingUnavailable: the upstream failed and no cluster is reachable to heal it.
	codeHealingUnavailable = -32002
)

// message is the part of a JSON-RPC message the proxy looks at.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`
}

// isCall is a request that expects a response.
func (m *message) isCall() bool { return m.Method != "" && len(m.ID) > 0 && string(m.ID) != "null" }

// isResponse answers the request with id.
func (m *message) isResponse() bool {
	return m.Method == "" && len(m.ID) > 0 && (len(m.Result) > 0 || len(m.Error) > 0)
}

// progressToken is params._meta.progressToken, when the client asked for progress.
func (m *message) progressToken() json.RawMessage {
	var p struct {
		Meta struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	if len(m.Params) == 0 || json.Unmarshal(m.Params, &p) != nil {
		return nil
	}
	if t := p.Meta.ProgressToken; len(t) > 0 && string(t) != "null" {
		return t
	}
	return nil
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func errorResponse(id json.RawMessage, code int, msg string, data any) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", id, rpcError{Code: code, Message: msg, Data: data}})
	return b
}

func notification(method string, params any) []byte {
	b, _ := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  any    `json:"params"`
	}{"2.0", method, params})
	return b
}

// writeHTTPError answers with a JSON-RPC error body and an HTTP status.
func writeHTTPError(w http.ResponseWriter, status int, id json.RawMessage, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(errorResponse(id, code, msg, nil))
}

// writeSSE writes one JSON-RPC message as an event of the call's stream.
func writeSSE(w *sse.Writer, data []byte) error {
	return w.Event(sse.Event{Type: "message", Data: string(data)})
}
