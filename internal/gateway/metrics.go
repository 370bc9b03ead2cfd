package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/selfheal-dev/selfheal/internal/gateway/anthropic"
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
		Help: "Failed calls that triggered healing, by upstream (MCP upstream name, " +
			"\"chat-api\" for POST /v1/healing-requests, \"other\" for any name the config does not know) and outcome (\"created\" a new " +
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

// OtherUpstream is the upstream label of every name the config does not know.
const OtherUpstream = "other"

// Recorder feeds the vectors above; it implements anthropic.Recorder and
// serves the MCP proxy the same way. Upstream labels come only from the
// configuration: any other name (a client's report can carry anything)
// becomes "other", so no client can grow the label set.
type Recorder struct {
	known map[string]bool
}

// NewRecorder returns a Recorder that knows cfg's upstreams, "anthropic" and
// "chat-api".
func NewRecorder(cfg *Config) Recorder {
	known := map[string]bool{anthropic.Upstream: true, ChatAPIUpstream: true}
	for _, u := range cfg.Upstreams {
		known[u.Name] = true
	}
	return Recorder{known: known}
}

// ChatAPIUpstream labels healings reported through POST /v1/healing-requests.
const ChatAPIUpstream = "chat-api"

// label is upstream if the config knows it, else OtherUpstream.
func (r Recorder) label(upstream string) string {
	if r.known[upstream] {
		return upstream
	}
	return OtherUpstream
}

// HealingTriggered counts one failed call that created (or joined) a
// HealingRequest.
func (r Recorder) HealingTriggered(upstream string, created bool) {
	outcome := HealingJoined
	if created {
		outcome = HealingCreated
	}
	HealingsTriggered.WithLabelValues(r.label(upstream), outcome).Inc()
}

// ObserveAttempt counts one outbound attempt and its latency.
func (r Recorder) ObserveAttempt(upstream, code string, latency time.Duration) {
	UpstreamRequests.WithLabelValues(r.label(upstream), code).Inc()
	UpstreamLatency.WithLabelValues(r.label(upstream)).Observe(latency.Seconds())
}

// ObserveRetry counts one retry.
func (r Recorder) ObserveRetry(upstream, reason string) {
	Retries.WithLabelValues(r.label(upstream), reason).Inc()
}

// ObserveDelay counts one retry wait.
func (r Recorder) ObserveDelay(upstream string, wait time.Duration) {
	ProcessingDelays.WithLabelValues(r.label(upstream)).Inc()
	ProcessingDelaySeconds.WithLabelValues(r.label(upstream)).Observe(wait.Seconds())
}
