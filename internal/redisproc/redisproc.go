// Package redisproc runs a redis-server of its own on a free loopback port,
// for the faults a shared Redis must not suffer: restarts with and without
// persistence, restores of older files, pauses. Tests reach it through
// testredis.Start; the fault soak in bench/ uses it directly.
package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotInstalled means redis-server is not on the PATH.
var ErrNotInstalled = errors.New("redis-server is not installed")

// Options says how the server keeps its data.
type Options struct {
	// AOF turns on the append-only file, fsynced on every write; off, a
	// restart loses everything.
	AOF bool
	// Dir holds the server's files; required.
	Dir string
	// Args are extra redis-server arguments (e.g. "--maxmemory", "1mb").
	Args []string
}

// Server is one redis-server process (or a stopped one, between Stop and
// Start). Its methods are not safe for concurrent use.
type Server struct {
	Addr string
	// AOF is the persistence the next Start uses.
	AOF  bool
	dir  string
	bin  string
	args []string
	cmd  *exec.Cmd
}

// Start runs a redis-server on a free loopback port and waits until it answers.
func Start(o Options) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	if o.Dir == "" {
		return nil, errors.New("redisproc: Dir is required")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{Addr: addr, AOF: o.AOF, dir: o.Dir, bin: bin, args: o.Args}
	return s, s.Start()
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Dir is the directory of the server's files.
func (s *Server) Dir() string { return s.dir }

// Running reports whether the process runs (possibly paused).
func (s *Server) Running() bool { return s.cmd != nil }

// Start starts the stopped server and waits up to 20 s until it answers.
func (s *Server) Start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	aof := "no"
	if s.AOF {
		aof = "yes"
	}
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", aof, "--appendfsync", "always",
		"--enable-debug-command", "local", "--dir", s.dir, "--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return err
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.Kill()
			return fmt.Errorf("redis-server on %s did not answer in 20s; its log:\n%s", s.Addr, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Stop shuts the server down (SIGTERM: with AOF on, nothing acknowledged
// is lost). A paused server is resumed first.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	s.cmd = nil
}

// Kill ends the server at once (SIGKILL).
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Pause freezes the server (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() { s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume thaws a paused server.
func (s *Server) Resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

// SaveFiles copies the stopped server's append-only files into dir, so
// RestoreFiles can later bring it back to this moment.
func (s *Server) SaveFiles(dir string) error {
	return copyTree(filepath.Join(s.dir, "appendonlydir"), filepath.Join(dir, "appendonlydir"))
}

// RestoreFiles replaces the stopped server's append-only files with a copy
// SaveFiles made in dir.
func (s *Server) RestoreFiles(dir string) error {
	if err := os.RemoveAll(filepath.Join(s.dir, "appendonlydir")); err != nil {
		return err
	}
	return copyTree(filepath.Join(dir, "appendonlydir"), filepath.Join(s.dir, "appendonlydir"))
}

func copyTree(from, to string) error {
	return filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
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
}
