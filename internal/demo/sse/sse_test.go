package sse

import (
	"io"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func readAll(t *testing.T, r *Reader) []Event {
	t.Helper()
	var out []Event
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

func TestReader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream string
		want   []Event
	}{
		{"plain", "event: a\ndata: {\"x\":1}\n\n", []Event{{Type: "a", Data: `{"x":1}`}}},
		{"default type and no space after colon", "data:hello\n\n", []Event{{Type: "message", Data: "hello"}}},
		{"multi-line data", "data: one\ndata: two\ndata:\n\n", []Event{{Type: "message", Data: "one\ntwo\n"}}},
		{"ids persist until changed", "id: 1\ndata: a\n\ndata: b\n\nid: 3\ndata: c\n\n",
			[]Event{{ID: "1", Type: "message", Data: "a"}, {ID: "1", Type: "message", Data: "b"}, {ID: "3", Type: "message", Data: "c"}}},
		{"comments and heartbeats are skipped", ": hello\n\n:keepalive\ndata: x\n: mid\n\n", []Event{{Type: "message", Data: "x"}}},
		{"no data, no event", "event: ping\n\nid: 7\n\ndata: y\n\n", []Event{{ID: "7", Type: "message", Data: "y"}}},
		{"CRLF and CR endings", "event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r", []Event{{Type: "a", Data: "1"}, {Type: "b", Data: "2"}}},
		{"BOM", "\uFEFFdata: z\n\n", []Event{{Type: "message", Data: "z"}}},
		{"unknown fields ignored", "foo: bar\ndata: w\n\n", []Event{{Type: "message", Data: "w"}}},
		{"unterminated event discarded", "data: done\n\ndata: partial\n", []Event{{Type: "message", Data: "done"}}},
		{"id with NUL ignored", "id: 2\ndata: a\n\nid: x\x00y\ndata: b\n\n", []Event{{ID: "2", Type: "message", Data: "a"}, {ID: "2", Type: "message", Data: "b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(readAll(t, NewReader(strings.NewReader(tc.stream)))).To(Equal(tc.want))
		})
	}
}

func TestRetryAndComments(t *testing.T) {
	g := NewWithT(t)
	r := NewReader(strings.NewReader("retry: 250\n: ping 1\n: ping 2\nid: 9\ndata: a\n\nretry: x\n\n"))
	var comments []string
	r.OnComment = func(s string) { comments = append(comments, s) }
	g.Expect(readAll(t, r)).To(HaveLen(1))
	g.Expect(r.Retry()).To(Equal(250 * time.Millisecond))
	g.Expect(r.LastEventID()).To(Equal("9"))
	g.Expect(comments).To(Equal([]string{"ping 1", "ping 2"}))
}

func TestLongLineRefused(t *testing.T) {
	r := NewReader(strings.NewReader("data: " + strings.Repeat("a", MaxLine+1) + "\n\n"))
	if _, err := r.Next(); err == nil || err == io.EOF {
		t.Fatalf("want a line-length error, got %v", err)
	}
}
