// Package access says who a gateway client is and what it may reach: the upstreams
// it may call, the namespaces and Services whose healings it may report and see. The
// authenticator puts the Client in the request context; handlers ask it.
package access

import "context"

// Target is a Kubernetes Service a healing may be about.
type Target struct {
	Namespace string
	Service   string
}

// Client is an authenticated caller. A nil *Client is unrestricted (auth mode none,
// or a handler used without the authenticator).
type Client struct {
	// Name identifies the client in logs and per-client limits, never the token.
	Name string
	// Nil sets mean no restriction on that axis.
	upstreams  map[string]bool
	namespaces map[string]bool
	// targets is set when upstreams is: the Services of those upstreams.
	targets map[Target]bool
}

// NewClient returns a client limited to upstreams (name -> the Service it runs as)
// and namespaces; a nil map or slice leaves that axis unrestricted.
func NewClient(name string, upstreams map[string]Target, namespaces []string) *Client {
	c := &Client{Name: name}
	if upstreams != nil {
		c.upstreams = map[string]bool{}
		c.targets = map[Target]bool{}
		for n, t := range upstreams {
			c.upstreams[n] = true
			c.targets[t] = true
		}
	}
	if namespaces != nil {
		c.namespaces = map[string]bool{}
		for _, n := range namespaces {
			c.namespaces[n] = true
		}
	}
	return c
}

// ClientName is c's name, "" for an unrestricted anonymous client.
func (c *Client) ClientName() string {
	if c == nil {
		return ""
	}
	return c.Name
}

// Scoped reports whether c is limited in any way.
func (c *Client) Scoped() bool { return c != nil && (c.upstreams != nil || c.namespaces != nil) }

// AllowsNamespace reports whether c may see and report healings in namespace: it
// is in c's namespaces, and holds one of c's upstreams when c has those.
func (c *Client) AllowsNamespace(namespace string) bool {
	if c == nil {
		return true
	}
	if c.namespaces != nil && !c.namespaces[namespace] {
		return false
	}
	if c.targets == nil {
		return true
	}
	for t := range c.targets {
		if t.Namespace == namespace {
			return true
		}
	}
	return false
}

// AllowsUpstream reports whether c may call the MCP upstream name, which runs in
// namespace.
func (c *Client) AllowsUpstream(name, namespace string) bool {
	return c.AllowsNamespace(namespace) && (c == nil || c.upstreams == nil || c.upstreams[name])
}

// AllowsTarget reports whether c may report, and see the healings of, the Service.
func (c *Client) AllowsTarget(t Target) bool {
	return c.AllowsNamespace(t.Namespace) && (c == nil || c.targets == nil || c.targets[t])
}

type ctxKey struct{}

// NewContext returns ctx carrying c.
func NewContext(ctx context.Context, c *Client) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the client of a request (nil when none was authenticated).
func FromContext(ctx context.Context) *Client {
	c, _ := ctx.Value(ctxKey{}).(*Client)
	return c
}
