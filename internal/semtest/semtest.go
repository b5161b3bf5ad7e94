// Package semtest hands the tests of every package the semantics corpus,
// decision/testdata/semantics.json: one state, and the cases that pin
// every reason against it (the engine's tests run the cases; the fronts'
// and sync's tests serve the state).
package semtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/jwtauth"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

// Raw is the whole corpus file.
func Raw(t testing.TB) []byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "../../decision/testdata/semantics.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// State is the corpus's state document.
func State(t testing.TB) []byte {
	t.Helper()
	var s struct {
		State json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(Raw(t), &s); err != nil {
		t.Fatal(err)
	}
	return s.State
}

// Document is the corpus's state, parsed and validated.
func Document(t testing.TB) *decision.Document {
	t.Helper()
	doc, err := decision.ParseDocument(bytes.NewReader(State(t)))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// Engine is an engine with metrics on a registry of its own and the
// shipped policy; with revision > 0 it serves the corpus's state at that
// revision. It is closed at the end of the test.
func Engine(t testing.TB, revision uint64) (*decision.Engine, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	var e *decision.Engine
	m := decision.NewMetrics(reg, func() time.Time { return e.FreshAt() }, jwtauth.FailureReasons...)
	e, err := decision.NewEngine(decision.Config{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(p)
	if revision > 0 {
		e.SetSnapshot(decision.NewSnapshot(Document(t), revision))
	}
	return e, reg
}
