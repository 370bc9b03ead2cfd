package anthropic

import (
	"bufio"
	"bytes"
	"errors"
)

// readEvent appends one complete SSE event (its lines through the blank line
// that ends it) to buf and returns the event's name. An error means the
// stream ended or broke; a partial event is then left out of buf's meaning
// (the caller discards it), so a client never sees half an event.
func readEvent(br *bufio.Reader, buf *bytes.Buffer) (string, error) {
	name := ""
	lineStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if lineStart {
				if line := trimEOL(chunk); len(line) == 0 && err == nil {
					buf.Write(chunk)
					if buf.Len() == len(chunk) {
						// A stray blank line between events: skip it.
						buf.Reset()
						continue
					}
					return name, nil
				} else if v, ok := bytes.CutPrefix(line, []byte("event:")); ok && err == nil {
					name = string(bytes.TrimSpace(v))
				}
			}
			buf.Write(chunk)
		}
		switch {
		case err == nil:
			lineStart = true
		case errors.Is(err, bufio.ErrBufferFull):
			lineStart = false
		default:
			return name, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// errorEventType returns error.type from the data of an "event: error".
func errorEventType(event []byte) string {
	var data []byte
	for _, line := range bytes.Split(event, []byte("\n")) {
		if v, ok := bytes.CutPrefix(trimEOL(line), []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
		}
	}
	e, ok := parseUpstreamError(data)
	if !ok {
		return ""
	}
	return e.Error.Type
}
