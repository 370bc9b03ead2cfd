package gateway

import (
	"net"
	"net/http"
	"time"
)

// OutboundOptions tune NewOutboundTransport; zero fields take defaults.
type OutboundOptions struct {
	// MaxIdleConnsPerHost bounds kept-alive connections per upstream.
	MaxIdleConnsPerHost int
	DialTimeout         time.Duration
	// ResponseHeaderTimeout is left 0 (none) by default: each proxy sets its
	// own per-attempt deadline on the request context.
	ResponseHeaderTimeout time.Duration
}

// NewOutboundTransport is the one constructor for the gateway's outbound
// HTTP: every upstream call (Anthropic and MCP) goes through a transport
// made here, so connection reuse, dial and TLS timeouts are tuned in one
// place. HTTP(S)_PROXY is honoured as the standard library does.
func NewOutboundTransport(o OutboundOptions) *http.Transport {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 256
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
	}
}

// NewOutboundClient wraps NewOutboundTransport for callers that want a
// client. It never follows redirects: a proxy passes them to its client.
func NewOutboundClient(o OutboundOptions) *http.Client {
	return &http.Client{
		Transport:     NewOutboundTransport(o),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
