package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/selfheal-dev/selfheal/internal/sse"
)

// An upstream that sends one event and then waits for the client to have it: a
// proxy that buffers the stream (instead of flushing event by event) deadlocks here.
// Catches: buffering anywhere between the Anthropic upstream and the client (the
// peek, the pump, a compressing or buffering writer).
func TestAnthropicStreamIsNotBuffered(t *testing.T) {
	// Bounds the response headers too: a buffering proxy holds them as well.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clientHasIt := make(chan struct{})
	drip := func(w http.ResponseWriter, r *http.Request) {
		startStream(w)
		for _, ev := range streamPrelude {
			writeSSE(w, ev)
		}
		writeSSE(w, streamContent[0]) // content_block_start
		writeSSE(w, streamContent[1]) // the first delta
		select {
		case <-clientHasIt:
		case <-r.Context().Done():
			return
		}
		for _, ev := range streamContent[2:] {
			writeSSE(w, ev)
		}
	}
	up := newFakeAnthropic(t, drip)
	g := startGateway(t, up.srv.URL, gwSetup{})

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.url+"/v1/messages",
		strings.NewReader(`{"model":"claude-test-1","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-Api-Key", clientToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	readDrip(t, ctx, sse.NewReader(res.Body), clientHasIt, "content_block_delta", "message_stop")
}

// readDrip reads events until first, closes got, then reads until last. Each wait
// is bounded, so a buffering proxy fails the test instead of hanging it.
func readDrip(t *testing.T, ctx context.Context, r *sse.Reader, got chan struct{}, first, last string) {
	t.Helper()
	events := make(chan sse.Event)
	go func() {
		defer close(events)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	for _, want := range []string{first, last} {
		for found := false; !found; {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("the stream ended before %s", want)
				}
				found = ev.Type == want
			case <-time.After(20 * time.Second):
				t.Fatalf("no %s within 20s while the upstream waited for the client to have it: the proxy buffers the stream", want)
			}
		}
		if want == first {
			close(got)
		}
	}
}
