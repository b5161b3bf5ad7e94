package decision

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the decision, cache and state metrics. Series are created
// on first use, so only label combinations that occur are exposed; the hot
// path then costs one atomic load per metric.
type Metrics struct {
	duration  *prometheus.HistogramVec
	decisions *prometheus.CounterVec
	hits      prometheus.Counter
	misses    prometheus.Counter
	revision  prometheus.Gauge
	records   *prometheus.GaugeVec

	mu        sync.Mutex
	durations [numAPIs][numChecks]atomic.Pointer[prometheus.Observer]
	counts    [numAPIs][numChecks][2][numReasons]atomic.Pointer[prometheus.Counter]
}

// DurationBuckets start at a microsecond and double up to about a second.
var DurationBuckets = prometheus.ExponentialBuckets(1e-6, 2, 21)

// NewMetrics registers the engine's metrics on reg. age reports when the
// state was last known current (see Engine.FreshAt).
func NewMetrics(reg prometheus.Registerer, age func() time.Time) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "usher_decision_duration_seconds", Help: "Time to answer one check, by front and check.",
			Buckets: DurationBuckets,
		}, []string{"api", "check"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "usher_decisions_total", Help: "Decisions made, by front, check, outcome and reason.",
		}, []string{"api", "check", "allowed", "reason"}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{Name: "usher_state_revision", Help: "Revision of the state snapshot being served."}),
		records:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "usher_state_records", Help: "Records in the state snapshot, by kind."}, []string{"kind"}),
	}
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_decision_cache_requests_total", Help: "Decision cache lookups, by result.",
	}, []string{"result"})
	m.hits = cache.WithLabelValues("hit")
	m.misses = cache.WithLabelValues("miss")
	reg.MustRegister(m.duration, m.decisions, cache, m.revision, m.records,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "usher_state_age_seconds", Help: "Seconds since the state being served was last known to be current.",
		}, func() float64 {
			t := age()
			if t.IsZero() || t.Unix() <= 0 {
				return 0
			}
			return time.Since(t).Seconds()
		}))
	return m
}

func (m *Metrics) setState(s *Snapshot) {
	m.revision.Set(float64(s.Revision))
	for k := KindLicense; k <= KindGroup; k++ {
		m.records.WithLabelValues(k.String()).Set(float64(s.Count(k)))
	}
}

func (m *Metrics) observe(api API, check Check, d Decision, took time.Duration) {
	if d.Cached {
		m.hits.Inc()
	} else {
		m.misses.Inc()
	}
	m.observeDecision(api, check, d, took)
}

func (m *Metrics) observeDecision(api API, check Check, d Decision, took time.Duration) {
	o := m.durations[api][check].Load()
	if o == nil {
		m.mu.Lock()
		h := m.duration.WithLabelValues(api.String(), check.String())
		m.durations[api][check].Store(&h)
		m.mu.Unlock()
		o = &h
	}
	(*o).Observe(took.Seconds())
	allowed := 0
	if d.Allowed {
		allowed = 1
	}
	c := m.counts[api][check][allowed][d.Reason].Load()
	if c == nil {
		m.mu.Lock()
		ctr := m.decisions.WithLabelValues(api.String(), check.String(), strconv.FormatBool(d.Allowed), d.Reason.String())
		m.counts[api][check][allowed][d.Reason].Store(&ctr)
		m.mu.Unlock()
		c = &ctr
	}
	(*c).Inc()
}
