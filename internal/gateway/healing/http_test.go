package healing

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/selfheal-dev/selfheal/internal/sse"
)

// sseFrame is one SSE block as a client reads it: an event or a comment.
type sseFrame struct {
	id, event, comment string // the frame's own id, event name, first comment
	data               []byte
}

type sseReader struct {
	t *testing.T
	r *sse.Reader
}

func newSSEReader(t *testing.T, r io.Reader) *sseReader {
	return &sseReader{t: t, r: sse.NewReader(r)}
}

// next reads one frame; ok is false at the end of the stream.
func (r *sseReader) next() (f sseFrame, ok bool) {
	fr, err := r.r.NextFrame()
	if err != nil {
		return f, false
	}
	f.id, f.event = fr.ID, fr.Name
	if len(fr.Comments) > 0 {
		f.comment = fr.Comments[0]
	}
	if fr.Dispatched {
		f.data = []byte(fr.Event.Data)
	}
	return f, true
}

// nextEvent skips comments.
func (r *sseReader) nextEvent() sseFrame {
	r.t.Helper()
	for {
		f, ok := r.next()
		if !ok {
			r.t.Fatal("stream ended while waiting for an event")
		}
		if f.event != "" {
			return f
		}
	}
}

func (f sseFrame) decode(t *testing.T) Event {
	t.Helper()
	var ev Event
	if err := json.Unmarshal(f.data, &ev); err != nil {
		t.Fatalf("event data %q: %v", f.data, err)
	}
	return ev
}

func subscribe(t *testing.T, ctx context.Context, url string, lastID string) (*http.Response, *sseReader) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Fatalf("header %s = %q, want %q", k, got, want)
		}
	}
	r := newSSEReader(t, resp.Body)
	if f, ok := r.next(); !ok || f.comment != "connected" {
		t.Fatalf("first frame %+v, want the connected comment", f)
	}
	return resp, r
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 90s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func progress(hub *Hub, service, request string, i int) Event {
	return hub.Publish(Event{ID: eventID("ns", request, i), Type: EventHealingProgress, Namespace: "ns", Service: service, Request: request,
		Phase: "Diagnosing", Message: fmt.Sprintf("step %d", i)})
}

// Publish encodes an event once for all its subscribers: each stream carries it as
// json.Marshal writes it, with the time the hub stamped. Catches: an encoding made
// before the stamp, or one that misses a field.
func TestEveryStreamCarriesThePublishedEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hub := NewHub(HubOptions{})
	srv := httptest.NewServer(NewEventsHandler(hub, StreamOptions{}))
	defer srv.Close()
	var readers []*sseReader
	for range 3 {
		resp, r := subscribe(t, ctx, srv.URL, "")
		defer resp.Body.Close()
		readers = append(readers, r)
	}
	published := hub.Publish(Event{ID: eventID("ns", "tools-1", 0), Type: EventHealingStart, Namespace: "ns", Service: "tools",
		Request: "tools-1", Findings: []FindingSummary{{Check: "PodStatus", Result: "Fail", Message: "crashloop"}}})
	want, _ := json.Marshal(published)
	for i, r := range readers {
		if f := r.nextEvent(); string(f.data) != string(want) || published.Time.IsZero() {
			t.Fatalf("subscriber %d read %s, want %s", i, f.data, want)
		}
	}
}

func TestEventsResumeAfterReconnectLosesNoEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hub := NewHub(HubOptions{})
	srv := httptest.NewServer(NewEventsHandler(hub, StreamOptions{}))
	defer srv.Close()

	resp, r := subscribe(t, ctx, srv.URL, "")
	for i := 1; i <= 3; i++ {
		progress(hub, "tools", "tools-1", i)
	}
	var last string
	for i := 1; i <= 3; i++ {
		f := r.nextEvent()
		if ev := f.decode(t); ev.Message != fmt.Sprintf("step %d", i) || f.id != "ns/tools-1/"+strconv.Itoa(i) || f.event != EventHealingProgress {
			t.Fatalf("event %d = %+v %+v", i, f, ev)
		}
		last = f.id
	}
	resp.Body.Close() // the client's connection drops
	waitUntil(t, func() bool { return hub.Subscribers() == 0 })
	for i := 4; i <= 6; i++ {
		progress(hub, "tools", "tools-1", i) // published while nobody listens
	}

	resp, r = subscribe(t, ctx, srv.URL, last)
	defer resp.Body.Close()
	progress(hub, "tools", "tools-1", 7)
	for i := 4; i <= 7; i++ {
		f := r.nextEvent()
		if ev := f.decode(t); ev.Message != fmt.Sprintf("step %d", i) || f.id != "ns/tools-1/"+strconv.Itoa(i) {
			t.Fatalf("after resume, event %d = %s %+v", i, f.id, ev)
		}
	}
}

func TestEventsResumeTooOldSaysEventsWereMissed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hub := NewHub(HubOptions{RingSize: 4})
	srv := httptest.NewServer(NewEventsHandler(hub, StreamOptions{}))
	defer srv.Close()
	for i := 1; i <= 10; i++ {
		progress(hub, "tools", "tools-1", i)
	}
	resp, r := subscribe(t, ctx, srv.URL, "ns/tools-1/2")
	defer resp.Body.Close()
	if f := r.nextEvent(); f.event != EventMissed || f.id != "" {
		t.Fatalf("first event %+v, want %s without an id", f, EventMissed)
	}
	for i := 7; i <= 10; i++ {
		if f := r.nextEvent(); f.id != "ns/tools-1/"+strconv.Itoa(i) {
			t.Fatalf("got id %s, want %d", f.id, i)
		}
	}
}

func TestEventsFiltersByServiceAndRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hub := NewHub(HubOptions{})
	srv := httptest.NewServer(NewEventsHandler(hub, StreamOptions{}))
	defer srv.Close()
	respS, bySvc := subscribe(t, ctx, srv.URL+"?service=b", "")
	defer respS.Body.Close()
	respR, byReq := subscribe(t, ctx, srv.URL+"?request=a-2", "")
	defer respR.Body.Close()
	progress(hub, "a", "a-1", 1)
	progress(hub, "b", "b-1", 2)
	progress(hub, "a", "a-2", 3)
	progress(hub, "b", "b-1", 4)
	if ev := bySvc.nextEvent().decode(t); ev.Service != "b" || ev.Message != "step 2" {
		t.Fatalf("service filter: %+v", ev)
	}
	if ev := bySvc.nextEvent().decode(t); ev.Service != "b" || ev.Message != "step 4" {
		t.Fatalf("service filter: %+v", ev)
	}
	if ev := byReq.nextEvent().decode(t); ev.Request != "a-2" || ev.Message != "step 3" {
		t.Fatalf("request filter: %+v", ev)
	}
}

func TestEventsHeartbeat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clk := clocktesting.NewFakeClock(time.Now())
	hub := NewHub(HubOptions{})
	srv := httptest.NewServer(NewEventsHandler(hub, StreamOptions{Clock: clk}))
	defer srv.Close()
	resp, r := subscribe(t, ctx, srv.URL, "")
	defer resp.Body.Close()
	waitUntil(t, clk.HasWaiters)
	clk.Step(15 * time.Second)
	if f, ok := r.next(); !ok || f.comment != "heartbeat" {
		t.Fatalf("after 15s got %+v, want a heartbeat comment", f)
	}
}

func TestEventsShutdownSendsFinalEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hub := NewHub(HubOptions{})
	srv := httptest.NewServer(NewEventsHandler(hub, StreamOptions{}))
	defer srv.Close()
	resp, r := subscribe(t, ctx, srv.URL, "")
	defer resp.Body.Close()
	progress(hub, "a", "a-1", 1)
	hub.Close()
	if f := r.nextEvent(); f.id != "ns/a-1/1" {
		t.Fatalf("got %+v, want event 1 first", f)
	}
	f := r.nextEvent()
	if f.event != EventShutdown || !strings.Contains(string(f.data), `"lastEventId":"ns/a-1/1"`) {
		t.Fatalf("got %+v, want a shutdown event naming the last id", f)
	}
	if _, ok := r.next(); ok {
		t.Fatal("stream continued after the shutdown event")
	}
}

func TestSlowSubscriberIsDroppedWithoutSlowingOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hub := NewHub(HubOptions{BufferSize: 8, RingSize: 16})
	srv := httptest.NewServer(NewEventsHandler(hub, StreamOptions{FinalWriteTimeout: 10 * time.Second}))
	defer srv.Close()

	// The slow subscriber: a raw connection with a tiny receive buffer that does not read.
	slow, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_ = slow.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(slow, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", srv.Listener.Addr())
	waitUntil(t, func() bool { return hub.Subscribers() == 1 })

	fastResp, fast := subscribe(t, ctx, srv.URL, "")
	defer fastResp.Body.Close()
	waitUntil(t, func() bool { return hub.Subscribers() == 2 })

	const n = 2000
	big := strings.Repeat("x", 4000)
	received := make(chan error, 1)
	var got atomic.Int64
	go func() {
		for i := 1; i <= n; i++ {
			got.Store(int64(i - 1))
			f, ok := fast.next()
			for ok && f.event == "" {
				f, ok = fast.next()
			}
			if !ok || f.event != EventHealingProgress || f.id != "ns/a-1/"+strconv.Itoa(i) {
				received <- fmt.Errorf("fast subscriber: frame %d = %+v (ok %v)", i, f.event+" "+f.id, ok)
				return
			}
		}
		received <- nil
	}()
	for i := 1; i <= n; i++ {
		hub.Publish(Event{ID: eventID("ns", "a-1", i), Type: EventHealingProgress, Namespace: "ns", Service: "a", Request: "a-1", Message: big})
		if i%4 == 0 {
			// A reader that keeps up stays within its buffer; the slow one never reads.
			waitUntil(t, func() bool { return got.Load() >= int64(i-4) })
		}
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	if got := hub.Subscribers(); got != 1 {
		t.Fatalf("%d subscribers left, want only the fast one", got)
	}
	// The slow subscriber's stream ends with the dropped event once it reads.
	_ = slow.(*net.TCPConn).SetReadBuffer(4 << 20) // a tiny window makes loopback crawl
	_ = slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	var data []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := slow.Read(buf)
		data = append(data, buf[:n]...)
		if err == io.EOF {
			break // the gateway closed the stream
		}
		if err != nil {
			t.Fatalf("reading the slow stream: %v (read %d bytes, tail %q)", err, len(data), string(data[max(0, len(data)-300):]))
		}
	}
	tail := string(data[max(0, len(data)-600):])
	if !strings.Contains(tail, "event: dropped") || !strings.Contains(tail, "Last-Event-ID") {
		t.Fatalf("slow stream did not end with a dropped event; tail: %q", tail)
	}
}

func TestReportValidation(t *testing.T) {
	healer := New(Options{}) // no cluster
	srv := httptest.NewServer(NewReportHandler(healer, StreamOptions{MaxBodyBytes: 512}))
	defer srv.Close()
	for _, tc := range []struct {
		name, body string
		status     int
		contains   string
	}{
		{"malformed", `{"namespace":`, http.StatusBadRequest, "malformed JSON"},
		{"unknown field", `{"namespace":"ns","service":"a","failureClass":"Timeout","colour":"red"}`, http.StatusBadRequest, "colour"},
		{"missing", `{"message":"boom"}`, http.StatusBadRequest, "namespace, service, failureClass"},
		{"unknown class", `{"namespace":"ns","service":"a","failureClass":"Meteor"}`, http.StatusUnprocessableEntity, `unknown failure class "Meteor"`},
		{"bad service", `{"namespace":"ns","service":"A_B","reason":"Timeout"}`, http.StatusUnprocessableEntity, "service"},
		{"too large", `{"namespace":"ns","service":"a","failureClass":"Timeout","message":"` + strings.Repeat("x", 600) + `"}`, http.StatusRequestEntityTooLarge, "512"},
		{"no cluster", `{"namespace":"ns","service":"a","reason":"ConnectionRefused","message":"dial tcp: refused"}`, http.StatusServiceUnavailable, "healing unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error string `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tc.status || !strings.Contains(body.Error, tc.contains) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, body.Error, tc.status, tc.contains)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	in := `Post "http://user:hunter2@tools:8080/mcp?token=abc123": Authorization: Bearer sk-ant-api03-SECRETSECRET x-api-key=sk-ant-XYZXYZXYZXYZ`
	out := Redact(in, 1024)
	for _, secret := range []string{"hunter2", "abc123", "SECRETSECRET", "XYZXYZ"} {
		if strings.Contains(out, secret) {
			t.Fatalf("Redact left %q in %q", secret, out)
		}
	}
	if got := Redact(strings.Repeat("é", 600), 1024); len(got) > 1024 || !strings.HasSuffix(got, "é") {
		t.Fatalf("Redact cut a rune or exceeded the bound: %d bytes", len(got))
	}
}

// A client that resumes on a replica that has not yet seen the client's last event
// (its watch lags the other's) gets neither a repeat of the steps it has nor a false
// events_missed. Catches: resuming by position alone, which replays the request from
// its start or reports events as missed.
func TestResumeAheadOfThisReplica(t *testing.T) {
	hub := NewHub(HubOptions{})
	hub.Publish(Event{ID: eventID("ns", "r", StepStart), Type: EventHealingStart, Namespace: "ns", Request: "r"})
	progress(hub, "tools", "r", 1)
	sub, backlog, missed := hub.Resume(Filter{}, eventID("ns", "r", 2)) // read on the other replica
	defer sub.Close()
	if missed || len(backlog) != 0 {
		t.Fatalf("missed %v, backlog %d events; want neither", missed, len(backlog))
	}
	progress(hub, "tools", "r", 2) // this replica catches up: the client has it
	progress(hub, "tools", "r", 3)
	if ev := <-sub.Events(); ev.ID != eventID("ns", "r", 3) {
		t.Fatalf("got %s, want step 3 only", ev.ID)
	}
	for _, id := range []string{"2", "ns/r", "ns/r/x", "a/b/c/d", "ns/r/-1"} {
		if _, ok := ParseEventID(id); ok {
			t.Errorf("%q parsed as an event id", id)
		}
	}
	for _, id := range []string{"ns/r/0", "ns/r/17", "ns/r/dup", "ns/r/end"} {
		if e, ok := ParseEventID(id); !ok || e.String() != id {
			t.Errorf("%q does not round-trip: %+v", id, e)
		}
	}
}
