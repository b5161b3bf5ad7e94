package testredis

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server of a test's own on a free loopback port, for
// the faults a shared Redis must not suffer: restarts, data loss, pauses.
type Server struct {
	t    testing.TB
	bin  string
	Addr string
	// Dir holds the server's files (the append-only directory, the log).
	Dir  string
	aof  bool
	args []string
	cmd  *exec.Cmd
}

// Options says how the server keeps its data.
type Options struct {
	// AOF turns on the append-only file, fsynced on every write; off, a
	// restart loses everything.
	AOF bool
	// Args are extra redis-server arguments (e.g. "--maxmemory", "1mb").
	Args []string
}

// Start runs a redis-server; it is stopped at the end of the test. Without
// redis-server installed the test is skipped, except under CI=true.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed; scripts/test.sh installs it")
		}
		t.Skip("SKIPPING: redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{t: t, bin: bin, Addr: addr, Dir: t.TempDir(), aof: o.AOF, args: o.Args}
	s.Start()
	t.Cleanup(func() {
		if s.cmd != nil {
			s.cmd.Process.Signal(syscall.SIGCONT)
			s.Stop()
		}
	})
	return s
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Start starts the (stopped) server and waits until it answers.
func (s *Server) Start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	aof := "no"
	if s.aof {
		aof = "yes"
	}
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", aof, "--appendfsync", "always",
		"--enable-debug-command", "local", "--dir", s.Dir, "--daemonize", "no", "--logfile", filepath.Join(s.Dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer in 20s; its log:\n%s", s.Addr, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop shuts the server down (SIGTERM: with AOF on, nothing acknowledged is lost).
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	s.cmd = nil
}

// Kill ends the server at once (SIGKILL).
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Pause freezes the server (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() { s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume thaws a paused server.
func (s *Server) Resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

// SaveFiles copies the server's data files (it must be stopped), so that
// RestoreFiles can later bring it back to this moment.
func (s *Server) SaveFiles() string {
	s.t.Helper()
	to := s.t.TempDir()
	copyTree(s.t, filepath.Join(s.Dir, "appendonlydir"), filepath.Join(to, "appendonlydir"))
	return to
}

// RestoreFiles replaces the (stopped) server's data files with a copy
// SaveFiles made.
func (s *Server) RestoreFiles(from string) {
	s.t.Helper()
	if err := os.RemoveAll(filepath.Join(s.Dir, "appendonlydir")); err != nil {
		s.t.Fatal(err)
	}
	copyTree(s.t, filepath.Join(from, "appendonlydir"), filepath.Join(s.Dir, "appendonlydir"))
}

func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
