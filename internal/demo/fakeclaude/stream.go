package fakeclaude

import (
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/selfheal-dev/selfheal/internal/sse"
)

// streamMessage writes msg as the API's server-sent events: message_start,
// content_block_start, a ping, content_block_delta (text_delta or input_json_delta,
// in small pieces), content_block_stop per block, message_delta, message_stop. Each
// event is flushed. An in-band fault ends the stream with an error event after
// message_start; a cut aborts the connection after some deltas.
func streamMessage(w http.ResponseWriter, msg message, fault Fault) {
	sw := sse.Start(w)
	send := func(event string, data any) {
		raw, _ := json.Marshal(data)
		_ = sw.Event(sse.Event{Type: event, Data: string(raw)})
		_ = sw.Flush()
	}

	start := msg
	start.Content = []outBlock{}
	start.StopReason = nil
	start.Usage.OutputTokens = 1
	send("message_start", struct {
		Type    string  `json:"type"`
		Message message `json:"message"`
	}{"message_start", start})
	if fault.InBand {
		send("error", apiError{Type: "error", Error: errorObj{Type: fault.ErrorType, Message: fault.Message}, RequestID: w.Header().Get("request-id")})
		return
	}

	deltas := 0
	delta := func(index int, d any) {
		send("content_block_delta", struct {
			Type  string `json:"type"`
			Index int    `json:"index"`
			Delta any    `json:"delta"`
		}{"content_block_delta", index, d})
		deltas++
		if fault.CutAfterDeltas > 0 && deltas >= fault.CutAfterDeltas {
			panic(http.ErrAbortHandler) // cuts the connection mid-stream
		}
	}
	for i, b := range msg.Content {
		empty := b
		switch b.Type {
		case "text":
			empty.Text = ""
			send("content_block_start", blockStart{"content_block_start", i, textStart{Type: "text", Text: ""}})
		case "tool_use":
			empty.Input = json.RawMessage(`{}`)
			send("content_block_start", blockStart{"content_block_start", i, empty})
		}
		if i == 0 {
			send("ping", typeOnly{"ping"})
		}
		switch b.Type {
		case "text":
			for _, piece := range pieces(b.Text, 24) {
				delta(i, textDelta{"text_delta", piece})
			}
		case "tool_use":
			// The API opens tool input with an empty partial_json.
			delta(i, jsonDelta{"input_json_delta", ""})
			for _, piece := range pieces(string(b.Input), 8) {
				delta(i, jsonDelta{"input_json_delta", piece})
			}
		}
		send("content_block_stop", struct {
			Type  string `json:"type"`
			Index int    `json:"index"`
		}{"content_block_stop", i})
	}
	send("message_delta", messageDelta{Type: "message_delta",
		Delta: stopDelta{StopReason: msg.StopReason}, Usage: outputUsage{OutputTokens: msg.Usage.OutputTokens}})
	send("message_stop", typeOnly{"message_stop"})
}

// The events' shapes, with "type" first as the API writes it.
type (
	typeOnly struct {
		Type string `json:"type"`
	}
	blockStart struct {
		Type         string `json:"type"`
		Index        int    `json:"index"`
		ContentBlock any    `json:"content_block"`
	}
	textDelta struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	jsonDelta struct {
		Type        string `json:"type"`
		PartialJSON string `json:"partial_json"`
	}
	stopDelta struct {
		StopReason   *string `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
	}
	outputUsage struct {
		OutputTokens int `json:"output_tokens"`
	}
	messageDelta struct {
		Type  string      `json:"type"`
		Delta stopDelta   `json:"delta"`
		Usage outputUsage `json:"usage"`
	}
)

// textStart keeps "text": "" in a text block's start event (outBlock omits it).
type textStart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// pieces splits s into chunks of about n bytes, on word boundaries where possible,
// so that concatenating them gives s back.
func pieces(s string, n int) []string {
	var out []string
	for len(s) > n {
		cut := strings.LastIndexByte(s[:n], ' ')
		if cut <= 0 {
			cut = n
			for cut > 1 && !utf8.RuneStart(s[cut]) {
				cut--
			}
		} else {
			cut++ // keep the space with the piece before it
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}
