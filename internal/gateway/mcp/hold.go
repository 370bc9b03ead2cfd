package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

// heldCall is a client call kept open while its upstream is healed.
type heldCall struct {
	w        http.ResponseWriter
	sw       *sse.Writer // the client's open event stream; nil when it takes JSON
	sse      bool        // the client's response is an open event stream
	id       json.RawMessage
	token    json.RawMessage
	progress int
}

// notify relays one healing step to the client as MCP progress or a log message.
func (h *heldCall) notify(level, text string, ev *healing.Event) {
	if !h.sse {
		return
	}
	var n []byte
	if h.token != nil {
		h.progress++
		n = notification("notifications/progress", map[string]any{
			"progressToken": h.token,
			"progress":      h.progress,
			"message":       text,
		})
	} else {
		data := map[string]any{"message": text}
		if ev != nil {
			data["healingRequest"] = ev.Request
			data["namespace"] = ev.Namespace
			data["service"] = ev.Service
			data["phase"] = ev.Phase
			data["event"] = ev.Type
		}
		n = notification("notifications/message", map[string]any{
			"level":  level,
			"logger": "selfheal-gateway",
			"data":   data,
		})
	}
	_ = writeSSE(h.sw, n)
	_ = h.sw.Flush()
}

// finish sends the final JSON-RPC message of the call.
func (h *heldCall) finish(msg []byte) {
	if h.sse {
		_ = writeSSE(h.sw, msg)
		_ = h.sw.Flush()
		return
	}
	h.w.Header().Set("Content-Type", "application/json")
	h.w.WriteHeader(http.StatusOK)
	_, _ = h.w.Write(msg)
}

func (h *heldCall) fail(code int, msg string, data any) {
	h.finish(errorResponse(h.id, code, msg, data))
}

// healOutcome is how one healing ended for a held call.
type healOutcome struct {
	healed      bool
	unavailable bool
	event       *healing.Event // the terminal event
	err         string
}

// hold heals the upstream, relays the steps, and replays the call.
func (p *Proxy) hold(w http.ResponseWriter, r *http.Request, up *upstream, msg *message, body []byte, sess *session, fail *failure) {
	ctx := r.Context()
	log := ctrl.LoggerFrom(ctx).WithValues("upstream", up.Name, "namespace", up.Namespace, "service", up.Service, "method", msg.Method)
	h := &heldCall{w: w, sse: sse.AcceptsStream(r.Header), id: msg.ID, token: msg.progressToken()}
	clientSID := r.Header.Get(headerSessionID)
	if msg.Method == "initialize" && h.sse {
		// The session id must go out with the response headers, which go out now:
		// mint the id the client keeps, mapped to the upstream's once it answers.
		clientSID = p.mintSessionID(up, body)
		w.Header().Set(headerSessionID, clientSID)
	}
	if h.sse {
		h.sw = sse.Start(w)
	}
	log.Info("Holding MCP call: upstream failed", "failureClass", fail.class, "detail", fail.detail, "cause", fail.cause)

	replays := 0
	for {
		var out healOutcome
		switch {
		case fail.class == selfhealv1alpha1.FailureMCPSessionLost && sess != nil:
			// A 404 for a known session means the upstream is up: a new session is
			// all the call needs, so re-create it and replay at once rather than wait
			// on a healing that may have no controller to answer it. The incident is
			// still reported, in the background, unless a healing that just ended
			// restarted the upstream (its sessions are gone by design).
			if up.healedWithin(time.Now(), sessionLossGrace) {
				log.Info("Recovering an MCP session lost to a recent healing")
			} else {
				log.Info("Recovering a lost MCP session; reporting the incident in the background")
				p.reportLater(ctx, up, fail)
			}
			out = healOutcome{healed: true}
		default:
			out = p.heal(ctx, up, h, fail)
			if out.healed {
				up.markHealed(time.Now())
			}
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case out.healed:
		case out.unavailable:
			h.fail(codeHealingUnavailable,
				fmt.Sprintf("upstream %s failed (%s) and healing is unavailable: %s", up.Name, fail.class, out.err),
				map[string]any{"upstream": up.Name, "failureClass": fail.class, "detail": fail.detail, "healing": "unavailable"})
			return
		default:
			h.fail(codeUpstreamUnavailable, diagnosisMessage(up, out), diagnosisData(up, fail, out))
			return
		}

		// Healed (or the session only needs re-creating): replay if allowed.
		switch {
		case up.Replay == ReplayNever:
			h.fail(codeUpstreamUnavailable, fmt.Sprintf("upstream %s was healed; the call was not replayed (replay mode never): retry it", up.Name),
				diagnosisData(up, fail, out))
			return
		case up.Replay == ReplayUnsent && !fail.unsent:
			h.fail(codeUpstreamUnavailable, fmt.Sprintf("upstream %s was healed, but the failed call may have reached it (%s), so it was not replayed (replay mode unsent): retry it if it is safe", up.Name, fail.class),
				diagnosisData(up, fail, out))
			return
		case replays >= p.opts.MaxReplays:
			h.fail(codeUpstreamUnavailable, fmt.Sprintf("upstream %s still fails after %d replays: %s", up.Name, replays, fail.detail),
				diagnosisData(up, fail, out))
			return
		}
		replays++
		resp, next, err := p.replay(ctx, up, r, body, sess, fail, log)
		if err != nil {
			if ctx.Err() == nil {
				log.Error(err, "Replaying the MCP call")
				h.fail(codeUpstreamUnavailable, "replaying the call failed", nil)
			}
			return
		}
		if next != nil {
			fail = next
			log.Info("Replayed MCP call failed again", "failureClass", fail.class, "replay", replays)
			continue
		}
		h.notify("info", fmt.Sprintf("Upstream %s is back: replayed the call", up.Name), nil)
		if msg.Method == "initialize" {
			clientSID = p.rememberSession(up, resp, body, clientSID)
		}
		p.deliver(h, resp, clientSID)
		return
	}
}

// replay sends the call again, re-creating the upstream session first when it was
// lost (or is lost on the way: a healing restarts the upstream's pods).
func (p *Proxy) replay(ctx context.Context, up *upstream, r *http.Request, body []byte, sess *session, fail *failure, log logr.Logger) (*http.Response, *failure, error) {
	switch {
	case sess != nil && sess.current() == "":
		// Known from its sealed id only: the upstream session is still to be made.
		if f, err := p.ensureUpstreamSession(ctx, up, sess); err != nil || f != nil {
			return nil, f, err
		}
	case sess != nil && fail.class == selfhealv1alpha1.FailureMCPSessionLost:
		if f, err := p.recoverSession(ctx, up, sess, fail.sessionID); err != nil || f != nil {
			return nil, f, err
		}
	}
	for range 2 {
		resp, f, err := p.forward(ctx, up, http.MethodPost, r.URL.RawQuery, r.Header, body, sess.current(), sess != nil)
		if err != nil || f == nil {
			return resp, nil, err
		}
		if sess == nil || f.class != selfhealv1alpha1.FailureMCPSessionLost {
			return nil, f, nil
		}
		log.Info("Upstream lost the MCP session during the healing: re-initializing")
		if f2, err := p.recoverSession(ctx, up, sess, f.sessionID); err != nil || f2 != nil {
			return nil, f2, err
		}
	}
	return nil, &failure{class: selfhealv1alpha1.FailureMCPSessionLost, unsent: true, detail: "upstream keeps losing the MCP session"}, nil
}

// heal creates or joins the healing of up's Service and relays its steps until it ends.
func (p *Proxy) heal(ctx context.Context, up *upstream, h *heldCall, fail *failure) healOutcome {
	if p.opts.Healer == nil {
		return healOutcome{unavailable: true, err: "no cluster configured"}
	}
	status := 0
	if fail.class == selfhealv1alpha1.FailureHTTP5xx {
		status = fail.status
	}
	name, err := p.opts.Healer.Trigger(ctx, p.incident(up, fail, status))
	if err != nil {
		// The cause may name the API server; the client gets the class.
		ctrl.LoggerFrom(ctx).Info("Healing unavailable", "upstream", up.Name, "error", err.Error())
		return healOutcome{unavailable: true, err: healingUnavailableReason(err)}
	}
	h.notify("warning", fmt.Sprintf("Upstream %s failed (%s): healing %s/%s (HealingRequest %s); holding the call",
		up.Name, fail.class, up.Namespace, up.Service, name),
		&healing.Event{Type: healing.EventHealingStart, Request: name, Namespace: up.Namespace, Service: up.Service})
	// The Healer ends the wait at the request's own deadline, with its diagnosis.
	for ev := range p.opts.Healer.Wait(ctx, up.Namespace, name) {
		level := "info"
		if ev.Type == healing.EventHealingFailed {
			level = "warning"
		}
		text := ev.Message
		if ev.Phase != "" && !ev.Terminal() {
			text = fmt.Sprintf("[%s] %s", ev.Phase, ev.Message)
		}
		h.notify(level, text, &ev)
		if ev.Terminal() {
			e := ev
			return healOutcome{healed: ev.Type == healing.EventHealingComplete, event: &e}
		}
	}
	// Only the client going away ends the wait without an outcome.
	return healOutcome{err: fmt.Sprintf("the wait for healing %s ended", name),
		event: &healing.Event{Request: name, Namespace: up.Namespace, Service: up.Service}}
}

// incident is the HealingRequest's account of a failure: the cause as the gateway
// saw it (the cluster's operators may read upstream addresses; clients may not).
func (p *Proxy) incident(up *upstream, fail *failure, status int) healing.Failure {
	msg := fail.detail
	if fail.cause != "" {
		msg = fail.detail + ": " + fail.cause
	}
	return healing.Failure{
		Namespace: up.Namespace, Service: up.Service, Upstream: up.Name,
		Class: fail.class, HTTPStatus: status, Message: msg, Seen: fail.sentAt,
	}
}

// reportLater creates or joins the HealingRequest for fail without holding the
// call for it. It outlives the call (bounded by ReportTimeout).
func (p *Proxy) reportLater(ctx context.Context, up *upstream, fail *failure) {
	if p.opts.Healer == nil {
		return
	}
	f := p.incident(up, fail, 0)
	log := ctrl.LoggerFrom(ctx).WithValues("upstream", up.Name)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.ReportTimeout)
	go func() {
		defer cancel()
		name, err := p.opts.Healer.Trigger(rctx, f)
		if err != nil {
			log.Info("Could not report the lost MCP session", "error", err.Error())
			return
		}
		log.Info("Reported the lost MCP session", "healingRequest", name)
	}()
}

// healingUnavailableReason says why healing is unavailable without the error's
// details (API server URLs, RBAC messages), which go to the log.
func healingUnavailableReason(err error) string {
	switch {
	case errors.Is(err, healing.ErrOutOfScope):
		return "the upstream's Service is not a healing target"
	case errors.Is(err, healing.ErrInvalidFailure):
		return "the failure cannot be reported"
	default:
		return "the gateway cannot reach the cluster's healing"
	}
}

func diagnosisMessage(up *upstream, out healOutcome) string {
	if out.event == nil || out.event.Type == "" {
		return fmt.Sprintf("upstream %s is unavailable and was not healed: %s", up.Name, out.err)
	}
	return fmt.Sprintf("upstream %s is unavailable and was not healed: %s", up.Name, out.event.Message)
}

func diagnosisData(up *upstream, fail *failure, out healOutcome) map[string]any {
	data := map[string]any{
		"upstream":     up.Name,
		"namespace":    up.Namespace,
		"service":      up.Service,
		"failureClass": fail.class,
		"detail":       fail.detail,
	}
	if out.err != "" {
		data["error"] = out.err
	}
	if ev := out.event; ev != nil {
		data["healingRequest"] = ev.Request
		if ev.Phase != "" {
			data["phase"] = ev.Phase
		}
		if ev.Issue != "" {
			data["issue"] = ev.Issue
		}
		if ev.Reason != "" {
			data["reason"] = ev.Reason
		}
		if ev.Message != "" {
			data["message"] = ev.Message
		}
		if len(ev.Findings) > 0 {
			data["findings"] = ev.Findings
		}
	}
	return data
}

// deliver sends the replayed call's response on the held stream (or as the response).
func (p *Proxy) deliver(h *heldCall, resp *http.Response, clientSID string) {
	if !h.sse {
		_ = relay(h.w, resp, clientSID)
		return
	}
	defer closeQuietly(resp.Body)
	if sse.IsStream(resp.Header) {
		// Event ids are the upstream's stream's; they mean nothing on this stream.
		r := sse.NewReader(resp.Body)
		r.MaxLine = int(p.opts.MaxBodyBytes)
		for {
			ev, err := r.Next()
			if err != nil || writeSSE(h.sw, []byte(ev.Data)) != nil || h.sw.Flush() != nil {
				return
			}
		}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, p.opts.MaxBodyBytes))
	var m message
	if err != nil || json.Unmarshal(b, &m) != nil || !m.isResponse() {
		h.fail(codeUpstreamUnavailable, fmt.Sprintf("upstream answered the replayed call with %d %s", resp.StatusCode, http.StatusText(resp.StatusCode)), nil)
		return
	}
	_ = writeSSE(h.sw, b)
	_ = h.sw.Flush()
}

// recoverSession creates a new upstream session for the client's session by replaying
// its initialize and notifications/initialized. It does nothing when the session was
// already recovered from lost by someone else.
func (p *Proxy) recoverSession(ctx context.Context, up *upstream, sess *session, lost string) (*failure, error) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.upstreamID != lost {
		return nil, nil
	}
	hdr := http.Header{}
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Accept", "application/json, text/event-stream")
	resp, f, err := p.forward(ctx, up, http.MethodPost, up.url.RawQuery, hdr, sess.initialize, "", false)
	if err != nil || f != nil {
		return f, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return &failure{class: selfhealv1alpha1.FailureMCPSessionLost, unsent: true,
			detail: fmt.Sprintf("re-initializing the upstream session: %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}, nil
	}
	result, err := readResponse(resp, p.opts.MaxBodyBytes)
	if err != nil {
		return &failure{class: selfhealv1alpha1.FailureMCPSessionLost, unsent: true, detail: "re-initializing the upstream session: " + err.Error()}, nil
	}
	var init struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	_ = json.Unmarshal(result, &init)
	newID := resp.Header.Get(headerSessionID)
	hdr = http.Header{}
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Accept", "application/json, text/event-stream")
	if init.Result.ProtocolVersion != "" {
		hdr.Set(headerProtocolVersion, init.Result.ProtocolVersion)
	}
	initialized := notification("notifications/initialized", map[string]any{})
	resp2, f, err := p.forward(ctx, up, http.MethodPost, up.url.RawQuery, hdr, initialized, newID, true)
	if err != nil || f != nil {
		return f, err
	}
	_, _ = io.Copy(io.Discard, resp2.Body)
	_ = resp2.Body.Close()
	sess.upstreamID = newID
	ctrl.LoggerFrom(ctx).Info("Re-created the upstream MCP session", "upstream", up.Name)
	return nil, nil
}

// readResponse returns the JSON-RPC response carried by resp, JSON or SSE.
func readResponse(resp *http.Response, limit int64) ([]byte, error) {
	if sse.IsStream(resp.Header) {
		r := sse.NewReader(resp.Body)
		r.MaxLine = int(limit)
		for {
			ev, err := r.Next()
			if errors.Is(err, io.EOF) {
				return nil, errors.New("stream ended without a response")
			}
			if err != nil {
				return nil, err
			}
			var m message
			if json.Unmarshal([]byte(ev.Data), &m) == nil && m.isResponse() {
				return checkResult([]byte(ev.Data))
			}
		}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, err
	}
	return checkResult(b)
}

func checkResult(b []byte) ([]byte, error) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decoding response: %w", err)
	}
	if len(m.Error) > 0 && string(m.Error) != "null" {
		return nil, fmt.Errorf("upstream error: %s", trimForLog(string(m.Error)))
	}
	return b, nil
}

// serveGET proxies the standalone SSE stream. When the upstream is down or lost the
// session, the client's stream is kept open while the proxy reconnects (re-creating
// the session), so a restart upstream does not end the client's session.
func (p *Proxy) serveGET(w http.ResponseWriter, r *http.Request, up *upstream) {
	ctx := r.Context()
	clientSID := r.Header.Get(headerSessionID)
	sess := p.sessionFor(up, clientSID)
	var resp *http.Response
	fail, err := p.ensureUpstreamSession(ctx, up, sess)
	if err == nil && fail == nil {
		resp, fail, err = p.forward(ctx, up, http.MethodGet, r.URL.RawQuery, r.Header, nil, sess.current(), sess != nil)
	}
	if err != nil {
		if ctx.Err() == nil {
			writeHTTPError(w, http.StatusBadGateway, nil, codeUpstreamUnavailable, "forwarding to upstream failed")
		}
		return
	}
	if fail == nil {
		_ = relay(w, resp, clientSID)
		return
	}
	if sess == nil || !sse.AcceptsStream(r.Header) {
		status := http.StatusBadGateway
		if fail.class == selfhealv1alpha1.FailureMCPSessionLost {
			status = http.StatusNotFound
		} else if fail.status != 0 {
			status = fail.status
		}
		writeHTTPError(w, status, nil, codeUpstreamUnavailable, "upstream failed: "+fail.detail)
		return
	}
	sw := sse.Start(w)
	hdr := r.Header.Clone()
	hdr.Del(headerLastEventID) // a new upstream session has no history to resume
	deadline := time.NewTimer(p.opts.StreamReconnectTimeout)
	defer deadline.Stop()
	for {
		if fail.class == selfhealv1alpha1.FailureMCPSessionLost {
			if f, err := p.recoverSession(ctx, up, sess, fail.sessionID); err == nil && f == nil {
				fail = nil
			}
		}
		if fail != nil {
			select {
			case <-ctx.Done():
				return
			case <-deadline.C:
				return // the client reconnects
			case <-time.After(p.opts.RetryInterval):
			}
		}
		resp, fail, err = p.forward(ctx, up, http.MethodGet, r.URL.RawQuery, hdr, nil, sess.current(), true)
		if err != nil {
			return
		}
		if fail != nil {
			continue
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			return
		}
		// Whole frames only: when this upstream stream breaks and the next one
		// takes over, the client's stream must not hold half an event.
		sr := sse.NewReader(resp.Body)
		sr.MaxLine = int(p.opts.MaxBodyBytes)
		for {
			f, err := sr.NextFrame()
			if err != nil || sw.Raw(f.Bytes) != nil || sw.Flush() != nil {
				return
			}
		}
	}
}
