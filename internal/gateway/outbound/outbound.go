// Package outbound makes the gateway's outbound HTTP: every upstream call (Anthropic
// and MCP) goes through a transport made here.
package outbound

import (
	"net"
	"net/http"
	"time"
)

// Options tune NewTransport; zero fields take defaults.
type Options struct {
	// MaxIdleConnsPerHost bounds kept-alive connections per upstream.
	MaxIdleConnsPerHost int
	DialTimeout         time.Duration
	// ResponseHeaderTimeout is left 0 (none) by default: each proxy sets its
	// own per-attempt deadline on the request context.
	ResponseHeaderTimeout time.Duration
}

// NewTransport is the one constructor for the gateway's outbound HTTP: every
// upstream call (Anthropic and MCP) goes through a transport made here, so
// connection reuse, dial and TLS timeouts are tuned in one place. HTTP(S)_PROXY is
// honoured as the standard library does. The gateway shares one between its proxies.
func NewTransport(o Options) *http.Transport {
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

// Client is a client on rt that never follows redirects: a proxy passes them to
// its client.
func Client(rt http.RoundTripper) *http.Client {
	return &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
