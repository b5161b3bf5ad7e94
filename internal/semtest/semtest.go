// Package semtest hands the tests of every package the semantics corpus,
// decision/testdata/semantics.json: one state, and the cases that pin
// every reason against it (the engine's tests run the cases; the fronts'
// and sync's tests serve the state).
package semtest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/usher-authz/usher/decision"
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
