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

	requests     *prometheus.CounterVec
	requestCtrs  [len(RequestAPIs)][len(statusCodes) + 1]prometheus.Counter
	authFailures [len(AuthFronts)]map[string]prometheus.Counter
	waits        map[string]prometheus.Counter
}

// RequestAPIs are the api label values of usher_requests_total.
var RequestAPIs = [...]string{"evaluate", "batch", "compat", "ext_authz_http", "ext_authz_grpc", "health", "status", "metrics", "leases", "holdings", "explain", "other"}

// AuthFronts are the front label values of usher_auth_failures_total.
var AuthFronts = [...]string{"ext_authz_grpc", "ext_authz_http", "evaluate"}

// statusCodes are the HTTP statuses Usher answers with; any other is "other".
var statusCodes = [...]int{200, 400, 401, 403, 404, 405, 408, 409, 413, 431, 500, 503}

// DurationBuckets start at a microsecond and double up to about a second.
var DurationBuckets = prometheus.ExponentialBuckets(1e-6, 2, 21)

// NewMetrics registers the engine's metrics on reg. age reports when the
// state was last known current (see Engine.FreshAt). authReasons is the
// closed label set of usher_auth_failures_total (the token verifier's
// reasons; decision does not know tokens); other reasons are not counted.
func NewMetrics(reg prometheus.Registerer, age func() time.Time, authReasons ...string) *Metrics {
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
		waits:    map[string]prometheus.Counter{},
	}
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_decision_cache_requests_total", Help: "Decision cache lookups, by result.",
	}, []string{"result"})
	m.hits = cache.WithLabelValues("hit")
	m.misses = cache.WithLabelValues("miss")
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_requests_total", Help: "Requests answered, by front and HTTP status (gRPC: the status Envoy returns).",
	}, []string{"api", "code"})
	for a, api := range RequestAPIs {
		for c, code := range statusCodes {
			m.requestCtrs[a][c] = m.requests.WithLabelValues(api, strconv.Itoa(code))
		}
		m.requestCtrs[a][len(statusCodes)] = m.requests.WithLabelValues(api, "other")
	}
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_auth_failures_total", Help: "Bearer tokens refused, by front and reason.",
	}, []string{"front", "reason"})
	for f, front := range AuthFronts {
		m.authFailures[f] = map[string]prometheus.Counter{}
		for _, r := range authReasons {
			m.authFailures[f][r] = failures.WithLabelValues(front, r)
		}
	}
	waits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_consistency_waits_total", Help: "Requests with a min_revision, by whether the state held it at once, after a wait, or not within the wait.",
	}, []string{"result"})
	for _, r := range WaitResults {
		m.waits[r] = waits.WithLabelValues(r)
	}
	reg.MustRegister(m.duration, m.decisions, cache, m.revision, m.records, m.requests, failures, waits,
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

func (m *Metrics) consistencyWait(result string) {
	if m != nil {
		m.waits[result].Inc()
	}
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

// Request counts one answered request of the api (an index of
// RequestAPIs) with its HTTP status. Safe for concurrent use; no allocation.
func (m *Metrics) Request(api int, code int) {
	if m == nil || api < 0 || api >= len(RequestAPIs) {
		return
	}
	i := len(statusCodes)
	for j, c := range statusCodes {
		if c == code {
			i = j
			break
		}
	}
	m.requestCtrs[api][i].Inc()
}

// AuthFailure counts a refused token on a front (an index of AuthFronts).
func (m *Metrics) AuthFailure(front int, reason string) {
	if m == nil || front < 0 || front >= len(AuthFronts) {
		return
	}
	if c, ok := m.authFailures[front][reason]; ok {
		c.Inc()
	}
}

// Indexes into RequestAPIs and AuthFronts.
const (
	ReqEvaluate = iota
	ReqBatch
	ReqCompat
	ReqExtAuthzHTTP
	ReqExtAuthzGRPC
	ReqHealth
	ReqStatus
	ReqMetrics
	ReqLeases
	ReqHoldings
	ReqExplain
	ReqOther
)

const (
	FrontGRPC = iota
	FrontHTTP
	FrontEvaluate
)
