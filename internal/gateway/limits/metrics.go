package limits

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Reasons of a refusal, the values of the reason label of RefusalsTotal.
const (
	ReasonBodyTooLarge      = "body_too_large"
	ReasonBodyBudget        = "body_budget"
	ReasonConnections       = "connections"
	ReasonSubscribers       = "subscribers"
	ReasonClientSubscribers = "client_subscribers"
)

var (
	refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "limit_refusals_total",
		Help: "Requests refused because a gateway limit was reached, by reason (body_too_large, " +
			"body_budget, connections, subscribers, client_subscribers).",
	}, []string{"reason"})
	bufferedBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "buffered_request_bytes",
		Help: "Bytes of request bodies held in memory now (for retries and replays).",
	})
	bufferedLimit = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "buffered_request_bytes_limit",
		Help: "The budget for buffered request bytes (limits.maxBufferedBytes).",
	})
	openConnections = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "open_connections",
		Help: "Client connections open now, hijacked event streams included.",
	})
	connectionsLimit = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "open_connections_limit",
		Help: "The cap on open client connections (limits.maxConnections).",
	})
	streams = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "streams",
		Help: "Open long-lived streams by kind (sse: GET /v1/healing/events and report streams).",
	}, []string{"kind"})
	streamsLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "streams_limit",
		Help: "The caps on long-lived streams by kind and scope (total, per_client).",
	}, []string{"kind", "scope"})
)

func init() {
	metrics.Registry.MustRegister(refusals, bufferedBytes, bufferedLimit, openConnections,
		connectionsLimit, streams, streamsLimit)
}

// Refused counts one refusal for reason (one of the Reason constants).
func Refused(reason string) { refusals.WithLabelValues(reason).Inc() }

var (
	sessions = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "mcp_sessions",
		Help: "MCP sessions the proxy remembers now.",
	})
	sessionsLimit = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "mcp_sessions_limit",
		Help: "The cap on remembered MCP sessions (limits.maxSessions).",
	})
	sessionEvictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "selfheal", Subsystem: "gateway", Name: "mcp_session_evictions_total",
		Help: "MCP sessions forgotten before their DELETE, by reason (idle: unused for limits.sessionIdleTimeout; capacity: least recently used over limits.maxSessions).",
	}, []string{"reason"})
)

func init() { metrics.Registry.MustRegister(sessions, sessionsLimit, sessionEvictions) }

// SetSessions reports the number of remembered MCP sessions.
func SetSessions(n int) { sessions.Set(float64(n)) }

// SessionsLimit reports the cap on remembered MCP sessions.
func SessionsLimit(n int) { sessionsLimit.Set(float64(n)) }

// SessionEvicted counts one session forgotten for reason (idle or capacity).
func SessionEvicted(reason string) { sessionEvictions.WithLabelValues(reason).Inc() }
