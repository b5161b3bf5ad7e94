package decision

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-authz/usher/internal/jsonw"
)

// LogEntry is one line of the decision log. It carries no subject or
// resource ids beyond the tenant: the log is for auditing volumes and
// reasons, not a record of who did what.
type LogEntry struct {
	ID     ID
	Time   time.Time
	API    API
	Tenant string
	// What was asked, so a decision id traces back to the question.
	App      string
	Subject  Principal
	Check    Check
	License  string  // seat: as asked (an id or a name)
	Asset    string  // entitlement
	Type     string  // entitlement type
	At       Instant // the time asked about; 0: now
	Grant    Grant   // when allowed
	Allowed  bool
	Reason   Reason
	Revision string // the revision token answered
	Latency  time.Duration
	Cached   bool
}

// LogConfig configures a Logger.
type LogConfig struct {
	// W receives JSON lines; required.
	W io.Writer
	// Sample is the fraction of decisions logged, in (0, 1]; default 1.
	Sample float64
	// Buffer is how many entries may wait for the writer; default 65,536.
	// When it is full, entries are dropped (and counted), never waited for.
	Buffer int
	// Registerer receives usher_decision_log_dropped_total; nil registers none.
	Registerer prometheus.Registerer
}

// Logger writes sampled decisions as JSON lines from its own
// goroutine; logging never blocks a decision.
type Logger struct {
	w       io.Writer
	sample  float64
	ch      chan LogEntry
	dropped prometheus.Counter
	done    chan struct{}
}

// NewLogger validates cfg.
func NewLogger(cfg LogConfig) (*Logger, error) {
	var errs []error
	if cfg.W == nil {
		errs = append(errs, errors.New("decision-log: a writer is required"))
	}
	if cfg.Sample == 0 {
		cfg.Sample = 1
	}
	if cfg.Sample < 0 || cfg.Sample > 1 {
		errs = append(errs, errors.New("decision-log-sample: must be in (0, 1]"))
	}
	if cfg.Buffer < 0 {
		errs = append(errs, errors.New("decision log buffer: must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = 1 << 16
	}
	l := &Logger{w: cfg.W, sample: cfg.Sample, ch: make(chan LogEntry, cfg.Buffer), done: make(chan struct{}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "usher_decision_log_dropped_total", Help: "Decision log entries dropped because the writer fell behind."})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(l.dropped)
	}
	return l, nil
}

// sampled reports whether the next decision should be logged.
func (l *Logger) sampled() bool { return l.sample >= 1 || rand.Float64() < l.sample }

// Log queues e without waiting; the caller must not share e's strings
// with memory it reuses.
func (l *Logger) Log(e LogEntry) {
	select {
	case l.ch <- e:
	default:
		l.dropped.Inc()
	}
}

// Run writes queued entries until ctx ends, then writes what is left.
func (l *Logger) Run(ctx context.Context) {
	defer close(l.done)
	bw := bufio.NewWriterSize(l.w, 64<<10)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var buf []byte
	write := func(e LogEntry) {
		buf = e.appendJSON(buf[:0])
		bw.Write(buf)
	}
	for {
		select {
		case e := <-l.ch:
			write(e)
		case <-tick.C:
			bw.Flush()
		case <-ctx.Done():
			for {
				select {
				case e := <-l.ch:
					write(e)
				default:
					bw.Flush()
					return
				}
			}
		}
	}
}

// Wait blocks until Run has written everything and returned.
func (l *Logger) Wait() { <-l.done }

func (e LogEntry) appendJSON(b []byte) []byte {
	b = append(b, `{"decision_id":"`...)
	b = e.ID.AppendText(b)
	b = append(b, `","time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","api":"`...)
	b = append(b, e.API.String()...)
	b = append(b, `","tenant":`...)
	b = jsonw.String(b, e.Tenant)
	if e.App != "" {
		b = append(b, `,"app_id":`...)
		b = jsonw.String(b, e.App)
	}
	if e.Subject.ID != "" {
		b = append(b, `,"subject":{"id":`...)
		b = jsonw.String(b, e.Subject.ID)
		b = append(b, `,"type":"`...)
		b = append(b, e.Subject.Type.String()...)
		b = append(b, `"}`...)
	}
	b = append(b, `,"check":"`...)
	b = append(b, e.Check.String()...)
	b = append(b, '"')
	switch e.Check {
	case CheckSeat:
		b = append(b, `,"license":`...)
		b = jsonw.String(b, e.License)
	case CheckEntitlement:
		b = append(b, `,"asset_id":`...)
		b = jsonw.String(b, e.Asset)
		b = append(b, `,"type":`...)
		b = jsonw.String(b, e.Type)
	}
	if e.At != 0 && e.At.Set() {
		b = append(b, `,"at":`...)
		b = e.At.AppendJSON(b)
	}
	b = append(b, `,"allowed":`...)
	b = jsonw.Bool(b, e.Allowed)
	if e.Allowed {
		b = append(b, `,"grant":{"id":`...)
		b = jsonw.String(b, e.Grant.ID)
		b = append(b, `,"via_group":`...)
		b = jsonw.NullString(b, e.Grant.ViaGroup)
		b = append(b, '}')
	}
	b = append(b, `,"reason":"`...)
	b = append(b, e.Reason.String()...)
	b = append(b, `","revision":`...)
	b = jsonw.String(b, e.Revision)
	b = append(b, `,"latency_us":`...)
	b = strconv.AppendFloat(b, float64(e.Latency.Nanoseconds())/1e3, 'f', 3, 64)
	b = append(b, `,"cached":`...)
	b = jsonw.Bool(b, e.Cached)
	return append(b, "}\n"...)
}
