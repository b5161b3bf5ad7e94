package testredis

import (
	"errors"
	"os"
	"testing"

	"github.com/usher-authz/usher/internal/redisproc"
)

// Server is a redis-server of a test's own (see redisproc); its methods
// fail the test instead of returning errors.
type Server struct {
	*redisproc.Server
	t testing.TB
}

// Options says how the server keeps its data and what else it is given.
type Options struct {
	// AOF turns on the append-only file, fsynced on every write.
	AOF bool
	// Args are extra redis-server arguments.
	Args []string
}

// Start runs a redis-server of the test's own on a free loopback port; it
// is stopped at the end of the test. Without redis-server installed the
// test is skipped, except under CI=true, where it fails.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	srv, err := redisproc.Start(redisproc.Options{AOF: o.AOF, Dir: t.TempDir(), Args: o.Args})
	if errors.Is(err, redisproc.ErrNotInstalled) {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed; scripts/test.sh installs it")
		}
		t.Skip("SKIPPING: redis-server is not installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &Server{Server: srv, t: t}
}

// Start starts the stopped server.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.Server.Start(); err != nil {
		s.t.Fatal(err)
	}
}

// SaveFiles copies the stopped server's data files and returns where.
func (s *Server) SaveFiles() string {
	s.t.Helper()
	dir := s.t.TempDir()
	if err := s.Server.SaveFiles(dir); err != nil {
		s.t.Fatal(err)
	}
	return dir
}

// RestoreFiles brings back a copy SaveFiles made.
func (s *Server) RestoreFiles(from string) {
	s.t.Helper()
	if err := s.Server.RestoreFiles(from); err != nil {
		s.t.Fatal(err)
	}
}
