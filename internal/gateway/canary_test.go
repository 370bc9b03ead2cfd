package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestCanaryKeyNeverLeaks runs retries, streams, failures and refusals
// through a gateway logging at V(10) and checks that the API key injected
// from the environment appears in no log line and no response body, while
// the upstream did receive it.
func TestCanaryKeyNeverLeaks(t *testing.T) {
	up := newFakeAnthropic(t,
		errorStatus(429, "rate_limit_error", "x", "retry-after", "1"), // messages.New: retried
		reset,               // messages.New: reset, retried
		overloadedInStream,  // stream: retried
		cutMidStream,        // stream: cut reported
		reset, reset, reset, // messages.New: 502 from the gateway
		errorStatus(401, "authentication_error", "invalid x-api-key"), // upstream refuses
	)
	g := startGateway(t, up.srv.URL, gwSetup{})
	var outputs []string
	record := func(err error) {
		if err != nil {
			outputs = append(outputs, err.Error())
		}
	}
	ctx := context.Background()
	_, err := g.client().Messages.New(ctx, newParams())
	record(err)
	_, err = streamText(t, g)
	record(err)
	_, err = streamText(t, g)
	record(err)
	_, err = g.client().Messages.New(ctx, newParams())
	record(err)
	_, err = g.client().Messages.New(ctx, newParams())
	record(err)
	for _, h := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"X-Api-Key": canaryKey}} {
		_, hdr, body := do(t, http.MethodPost, g.url+"/v1/messages", h, `{"model":"m"}`)
		outputs = append(outputs, body)
		for k, vs := range hdr {
			outputs = append(outputs, k+": "+strings.Join(vs, ","))
		}
	}
	_, _, body := do(t, http.MethodPost, g.url+"/v1/messages", map[string]string{"X-Api-Key": clientToken}, `{"model":`)
	outputs = append(outputs, body)

	if len(up.requests()) < 8 {
		t.Fatalf("scenarios did not reach the upstream (%d requests)", len(up.requests()))
	}
	for _, r := range up.requests() {
		if r.header.Get("X-Api-Key") != canaryKey {
			t.Fatal("upstream did not get the injected key")
		}
	}
	logs := g.logs.String()
	for _, want := range []string{"Forwarding to Anthropic", "Retrying Anthropic call", "X-Api-Key", "Gateway configured", "Refused unauthenticated request"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("debug run did not log %q; logs:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, canaryKey) || strings.Contains(logs, "canary") {
		t.Fatalf("canary key in logs:\n%s", logs)
	}
	if strings.Contains(logs, clientToken) {
		t.Fatalf("client token in logs")
	}
	for _, o := range outputs {
		if strings.Contains(o, canaryKey) {
			t.Fatalf("canary key in a response: %s", o)
		}
	}
}
