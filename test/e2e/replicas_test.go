package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/selfheal-dev/selfheal/internal/demo/stack"
)

// mcpPost sends one JSON-RPC message to a gateway's MCP endpoint, as an MCP client on
// the 2025-11-25 revision does, and returns the status, the session id it was given
// (or the one it sent) and the whole body.
func mcpPost(ctx context.Context, gateway, session, body string) (int, string, string) {
	GinkgoHelper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway+"/mcp/"+stack.Upstream, strings.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+env.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
		session = sid
	}
	return resp.StatusCode, session, string(data)
}

// replicas: an MCP client whose requests land on either gateway replica, alternating,
// keeps its one session: before, during and after a healing, the call is answered
// with the alerts whichever replica it reaches.
func replicas(ctx SpecContext) {
	gateways := []string{env.GatewayURL, env.SecondGatewayURL}
	status, session, body := mcpPost(ctx, gateways[0], "",
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
	Expect(status).To(Equal(http.StatusOK), body)
	Expect(session).NotTo(BeEmpty())
	status, _, body = mcpPost(ctx, gateways[1], session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	Expect(status).To(Equal(http.StatusAccepted), body)

	call := func(i int) {
		GinkgoHelper()
		status, got, body := mcpPost(ctx, gateways[i%2], session,
			fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"get_security_alerts","arguments":{}}}`, 10+i))
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(got).To(Equal(session), "the client keeps its session id on every replica")
		Expect(body).To(ContainSubstring("sf-1041"), "replica %d answered: %s", i%2+1, body)
	}
	for i := range 4 {
		call(i)
	}
	// Mid-healing: the server is scaled to zero; the next call, on the other replica
	// than the session was created on, is held, healed and answered.
	before := existingRequests(ctx)
	Expect(env.Scale(ctx, 0)).To(Succeed())
	Expect(env.WaitServing(ctx, false)).To(Succeed())
	start := time.Now()
	call(5)
	recovered("scaled to zero, the call on the second replica", time.Since(start))
	oneRequest(ctx, before)
	Expect(env.WaitHealthy(ctx)).To(Succeed())
	for i := 6; i < 10; i++ {
		call(i)
	}
}
