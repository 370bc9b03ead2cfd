package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/selfheal-dev/selfheal/internal/sse"
)

// Healing event types of GET /v1/healing/events.
const (
	EventHealingStart    = "healing_start"
	EventHealingProgress = "healing_progress"
	EventHealingComplete = "healing_complete"
	EventHealingFailed   = "healing_failed"
	EventProcessingDelay = "processing_delay"
)

// Event is one event of the gateway's healing stream.
type Event struct {
	// ID is the SSE event id: namespace/request/step, the same on every gateway
	// replica (empty for processing_delay).
	ID string
	// Type is the SSE event name, e.g. healing_start.
	Type string
	// Data is the event's JSON data as sent (a JSON string if it was not JSON).
	Data json.RawMessage
	// Healing holds the fields every healing event carries, decoded from Data.
	Healing
}

// Healing is the common part of a healing event's data.
type Healing struct {
	Request   string    `json:"request,omitempty"`
	Namespace string    `json:"namespace,omitempty"`
	Service   string    `json:"service,omitempty"`
	Upstream  string    `json:"upstream,omitempty"`
	Phase     string    `json:"phase,omitempty"`
	Message   string    `json:"message,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Issue     string    `json:"issue,omitempty"`
	Time      time.Time `json:"time,omitzero"`
}

// Filter narrows the events stream; empty fields do not filter.
type Filter struct {
	Namespace string
	Service   string
	Request   string
}

func (f Filter) query() string {
	q := url.Values{}
	for k, v := range map[string]string{"namespace": f.Namespace, "service": f.Service, "request": f.Request} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func newEvent(ev sse.Event) Event {
	out := Event{ID: ev.ID, Type: ev.Type}
	if json.Valid([]byte(ev.Data)) {
		out.Data = json.RawMessage(ev.Data)
		_ = json.Unmarshal(out.Data, &out.Healing) // best effort: other shapes keep Data only
	} else {
		out.Data, _ = json.Marshal(ev.Data)
	}
	return out
}

// Reconnection delays of the events stream, when the server does not set one.
const (
	minReconnect = 200 * time.Millisecond
	maxReconnect = 5 * time.Second
)

// Events subscribes to GET {GatewayURL}/v1/healing/events and returns once the
// stream is open, so no event after the return is missed. Events arrive on the
// channel in order; when the stream breaks, it reconnects with Last-Event-ID so that
// the gateway resends what was missed. The channel closes when ctx ends or the
// gateway refuses a reconnection (a 4xx). A slow reader holds the stream back: drain
// the channel.
func (c *Client) Events(ctx context.Context, f Filter) (<-chan Event, error) {
	body, err := c.openEvents(ctx, f, "")
	if err != nil {
		return nil, err
	}
	ch := make(chan Event, 64)
	go c.readEvents(ctx, f, body, ch)
	return ch, nil
}

// permanentError is a refusal that reconnecting will not fix.
type permanentError struct{ error }

func (c *Client) openEvents(ctx context.Context, f Filter, lastID string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.GatewayURL, "/")+"/v1/healing/events"+f.query(), nil)
	if err != nil {
		return nil, permanentError{fmt.Errorf("building the events request: %w", err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("opening the healing events stream: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		_ = res.Body.Close()
		err := fmt.Errorf("opening the healing events stream: %s: %s", res.Status, strings.TrimSpace(string(msg)))
		if res.StatusCode >= 400 && res.StatusCode < 500 && res.StatusCode != http.StatusTooManyRequests {
			return nil, permanentError{err}
		}
		return nil, err
	}
	return res.Body, nil
}

func (c *Client) readEvents(ctx context.Context, f Filter, body io.ReadCloser, ch chan<- Event) {
	defer close(ch)
	log := ctrl.LoggerFrom(ctx)
	lastID := ""
	delay := minReconnect
	for {
		r := sse.NewReader(body)
		for {
			ev, err := r.Next()
			if err != nil {
				break
			}
			delay = minReconnect // the stream works again
			select {
			case ch <- newEvent(ev):
			case <-ctx.Done():
				_ = body.Close()
				return
			}
		}
		_ = body.Close()
		if id := r.LastEventID(); id != "" {
			lastID = id
		}
		if r.Retry() > 0 {
			delay = r.Retry()
		}
		// Reconnect until the gateway answers again (or refuses for good).
		for {
			if ctx.Err() != nil {
				return
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			var err error
			body, err = c.openEvents(ctx, f, lastID)
			if err == nil {
				break
			}
			if errors.As(err, new(permanentError)) {
				log.Info("Healing events stream refused; giving up", "error", err.Error())
				return
			}
			delay = min(delay*2, maxReconnect)
		}
	}
}
