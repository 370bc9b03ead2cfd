package limits

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// busyResponse is written to a connection refused by ConnLimit: a complete answer, so
// a client sees why instead of a bare reset.
const busyResponse = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: 45\r\n\r\ngateway busy: too many open client connections"

// ConnLimit wraps a listener so that at most max connections are open at once
// (hijacked ones included: they are closed through the same wrapper). A connection
// over the cap is answered 503 and closed at once rather than left waiting in the
// kernel's backlog, where it would hold a client without a word.
func ConnLimit(ln net.Listener, max int) net.Listener {
	connectionsLimit.Set(float64(max))
	return &connLimit{Listener: ln, max: int64(max)}
}

type connLimit struct {
	net.Listener
	max  int64
	open atomic.Int64
}

func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			Refused(ReasonConnections)
			// A short deadline: the accept loop never waits on a client that does not read.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write([]byte(busyResponse))
			_ = c.Close()
			continue
		}
		openConnections.Inc()
		return &countedConn{Conn: c, l: l}, nil
	}
}

// Open is the number of connections open now.
func (l *connLimit) Open() int64 { return l.open.Load() }

type countedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.open.Add(-1)
		openConnections.Dec()
	})
	return c.Conn.Close()
}
