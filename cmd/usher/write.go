package main

// usher load, put, delete and export: the Redis writer on the command line.

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonw"
	statesync "github.com/usher-authz/usher/sync"
)

// writeFileAtomic writes doc to a temporary file beside path and renames
// it into place: a failure leaves path as it was.
func writeFileAtomic(path string, doc *decision.Document) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	if _, err := doc.WriteTo(w); err != nil {
		tmp.Close()
		return fmt.Errorf("export %s: nothing written: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("export %s: nothing written: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("export %s: nothing written: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

// write runs the Redis writer subcommands.
func write(cmd string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(cmd, map[string]string{"load": "FILE", "put": "KIND JSON", "delete": "KIND TENANT ID", "export": ""}[cmd], stderr)
	redisURL := fs.String("redis-url", "", "Redis to write (required; redis://, rediss://, redis+cluster://, redis+sentinel://)")
	namespace := fs.String("namespace", statesync.DefaultNamespace, "Redis key namespace")
	maxLen := new(int64)
	if cmd != "export" {
		fs.Int64Var(maxLen, "stream-max-len", statesync.DefaultStreamMaxLen, "change events the stream keeps (approximately)")
	}
	replace, strict, output, asJSON := false, false, "", false
	if cmd != "export" {
		fs.BoolVar(&asJSON, "json", false, `print {"revision": "…"} (and what a load changed) as JSON instead of a sentence`)
	}
	// done reports a write with the revision token of the state holding it.
	done := func(rev decision.Token, sentence string, extra ...any) {
		if asJSON {
			b := []byte(`{"revision":`)
			b = jsonw.String(b, rev.String())
			for i := 0; i+1 < len(extra); i += 2 {
				b = append(b, ',')
				b = jsonw.String(b, extra[i].(string))
				b = append(b, ':')
				b = strconv.AppendInt(b, int64(extra[i+1].(int)), 10)
			}
			fmt.Fprintf(stdout, "%s}\n", b)
			return
		}
		fmt.Fprintf(stdout, "%s (revision %s)\n", sentence, rev)
	}
	switch cmd {
	case "load":
		fs.BoolVar(&replace, "replace", false, "make Redis hold exactly the file: tenants and records not in it are deleted")
	case "export":
		fs.BoolVar(&strict, "strict", false, "fail (exit 1, nothing written) when Redis holds a record that breaks the state rules, instead of leaving it out")
		fs.StringVar(&output, "o", "", "write the document to this file (atomically: a failed export leaves an existing file as it was) instead of stdout")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			return usagef("%s: flags go before the arguments, got %q after them", cmd, a)
		}
	}
	if *redisURL == "" {
		return usagef("redis-url: required (or USHER_REDIS_URL)")
	}
	want := map[string]int{"load": 1, "put": 2, "delete": 3, "export": 0}[cmd]
	if fs.NArg() != want {
		return usagef("%s takes %d arguments, got %d (see usher help %s)", cmd, want, fs.NArg(), cmd)
	}
	client, err := statesync.NewClient(*redisURL, "usher-writer")
	if err != nil {
		return usageError{err}
	}
	defer client.Close()
	wcfg := statesync.WriterConfig{Client: client, Namespace: *namespace, StreamMaxLen: *maxLen}
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && stderr == os.Stderr {
		start := time.Now()
		wcfg.Progress = func(done, total int, bytes int64) { // on a terminal only
			mb := float64(bytes) / (1 << 20)
			fmt.Fprintf(stderr, "\rstaged %d of %d records, %.0f MB, %.1f MB/s ", done, total, mb, mb/time.Since(start).Seconds())
			if done == total {
				fmt.Fprintln(stderr)
			}
		}
	}
	w, err := statesync.NewWriter(wcfg)
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "load":
		in, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer in.Close()
		doc, err := decision.DecodeDocument(in)
		if err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(0), err)
		}
		res, err := w.Load(ctx, doc, replace)
		if err != nil {
			return fmt.Errorf("load %s: nothing written: %w", fs.Arg(0), err)
		}
		done(res.Revision, fmt.Sprintf("loaded %s: %d tenants now hold %d records", fs.Arg(0), res.Tenants, res.Records),
			"tenants", res.Tenants, "records", res.Records)
	case "put":
		kind, err := decision.ParseKind(fs.Arg(0))
		if err != nil {
			return usageError{err}
		}
		rev, err := w.Put(ctx, kind, []byte(fs.Arg(1)))
		if err != nil {
			return fmt.Errorf("put: nothing written: %w", err)
		}
		done(rev, fmt.Sprintf("put %s: written with its change event", kind))
	case "delete":
		kind, err := decision.ParseKind(fs.Arg(0))
		if err != nil {
			return usageError{err}
		}
		rev, err := w.Delete(ctx, kind, fs.Arg(1), fs.Arg(2))
		if err != nil {
			return fmt.Errorf("delete: nothing written: %w", err)
		}
		done(rev, fmt.Sprintf("deleted %s %q of tenant %q, with its change event", kind, fs.Arg(2), fs.Arg(1)))
	case "export":
		doc, bad, err := w.ExportValid(ctx)
		if err != nil {
			return err
		}
		if len(bad) > 0 {
			if strict {
				return fmt.Errorf("export: nothing written: Redis holds %d records that break the state rules: %w", len(bad), errors.Join(bad...))
			}
			for _, e := range bad {
				fmt.Fprintln(stderr, "usher: export: left out:", e)
			}
			fmt.Fprintf(stderr, "usher: export: %d invalid records left out (--strict makes this an error)\n", len(bad))
		}
		if output == "" {
			_, err := doc.WriteTo(stdout)
			return err
		}
		return writeFileAtomic(output, doc)
	}
	return nil
}
