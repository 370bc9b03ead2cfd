package sse

import (
	"mime"
	"net/http"
	"strings"
)

// accept reads the media ranges of a request's Accept headers.
func accept(h http.Header) (stream, json bool) {
	for _, v := range h.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || params["q"] == "0" {
				continue
			}
			switch mt {
			case ContentType, "text/*", "*/*":
				stream = true
			case "application/json":
				json = true
			}
		}
	}
	return stream, json
}

// AcceptsStream reports whether the request's Accept admits an event stream
// (text/event-stream, text/* or */*). An absent Accept admits none: this is the MCP
// Streamable HTTP rule, where a client must list text/event-stream to get one.
func AcceptsStream(h http.Header) bool {
	stream, _ := accept(h)
	return stream
}

// PrefersStream reports whether an endpoint that can answer either way should answer
// with an event stream: unless the client asked for JSON and not for a stream. An
// absent or unrelated Accept gets the stream.
func PrefersStream(h http.Header) bool {
	stream, json := accept(h)
	return stream || !json
}
