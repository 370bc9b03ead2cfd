package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the gateway, served on the manager's metrics endpoint. Label
// values are bounded: upstream is "anthropic" or a configured MCP upstream
// name, never a URL, header or token.
var (
	// UpstreamRequests counts outbound attempts.
	UpstreamRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "selfheal",
		Subsystem: "gateway",
		Name:      "upstream_requests_total",
		Help: "Outbound requests (each attempt, retries included) by upstream " +
			"(\"anthropic\" or the MCP upstream name) and code (HTTP status, " +
			"\"error\" when no response came, \"timeout\" when the attempt timed out).",
	}, []string{"upstream", "code"})

	// UpstreamLatency observes the time to an upstream's response headers.
	UpstreamLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "selfheal",
		Subsystem: "gateway",
		Name:      "upstream_request_duration_seconds",
		Help:      "Time from sending an outbound request to its response headers (or failure), by upstream.",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"upstream"})

	// Retries counts retried upstream attempts.
	Retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "selfheal",
		Subsystem: "gateway",
		Name:      "retries_total",
		Help: "Upstream attempts retried, by upstream and reason (connection_error, " +
			"timeout, request_timeout, conflict, rate_limited, overloaded, server_error, " +
			"x_should_retry, stream_overloaded_error, stream_cut_before_content).",
	}, []string{"upstream", "reason"})

	// ProcessingDelays counts retry waits reported to clients.
	ProcessingDelays = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "selfheal",
		Subsystem: "gateway",
		Name:      "processing_delays_total",
		Help:      "Retry waits during which a processing_delay event was published, by upstream.",
	}, []string{"upstream"})

	// ProcessingDelaySeconds observes the length of those waits.
	ProcessingDelaySeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "selfheal",
		Subsystem: "gateway",
		Name:      "processing_delay_seconds",
		Help:      "Length of retry waits, by upstream.",
		Buckets:   []float64{.1, .25, .5, 1, 2, 4, 8, 16, 32, 64},
	}, []string{"upstream"})

	// HealingsTriggered counts failed calls that created or joined a
	// HealingRequest. Incremented by the healing/MCP code via
	// RecordHealingTriggered.
	HealingsTriggered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "selfheal",
		Subsystem: "gateway",
		Name:      "healings_triggered_total",
		Help: "Failed calls that triggered healing, by upstream (MCP upstream name, or " +
			"\"chat-api\" for POST /v1/healing-requests) and outcome (\"created\" a new " +
			"HealingRequest or \"joined\" an active one).",
	}, []string{"upstream", "outcome"})
)

// Outcomes of RecordHealingTriggered.
const (
	HealingCreated = "created"
	HealingJoined  = "joined"
)

func init() {
	metrics.Registry.MustRegister(UpstreamRequests, UpstreamLatency, Retries,
		ProcessingDelays, ProcessingDelaySeconds, HealingsTriggered)
}

// RecordHealingTriggered counts one failed call that created or joined a
// HealingRequest.
func RecordHealingTriggered(upstream, outcome string) {
	HealingsTriggered.WithLabelValues(upstream, outcome).Inc()
}

// Recorder feeds the vectors above; it implements anthropic.Recorder and
// serves the MCP proxy the same way.
type Recorder struct{}

// ObserveAttempt counts one outbound attempt and its latency.
func (Recorder) ObserveAttempt(upstream, code string, latency time.Duration) {
	UpstreamRequests.WithLabelValues(upstream, code).Inc()
	UpstreamLatency.WithLabelValues(upstream).Observe(latency.Seconds())
}

// ObserveRetry counts one retry.
func (Recorder) ObserveRetry(upstream, reason string) {
	Retries.WithLabelValues(upstream, reason).Inc()
}

// ObserveDelay counts one retry wait.
func (Recorder) ObserveDelay(upstream string, wait time.Duration) {
	ProcessingDelays.WithLabelValues(upstream).Inc()
	ProcessingDelaySeconds.WithLabelValues(upstream).Observe(wait.Seconds())
}
