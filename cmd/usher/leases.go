package main

// usher leases list|release: floating seats for operators.

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	statesync "github.com/usher-authz/usher/sync"
)

func leases(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "release") {
		return usagef("leases: want list or release (usher leases list --tenant T --license L, usher leases release --tenant T LEASE_ID)")
	}
	sub := args[0]
	fs := newFlagSet("leases "+sub, map[string]string{"list": "", "release": "LEASE_ID"}[sub], stderr)
	redisURL := fs.String("redis-url", "", "Redis the leases are counted in (required)")
	namespace := fs.String("namespace", statesync.DefaultNamespace, "Redis key namespace")
	tenant := fs.String("tenant", "", "the tenant (required)")
	license := fs.String("license", "", "list: the floating license's id (required)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	want := map[string]int{"list": 0, "release": 1}[sub]
	switch {
	case *redisURL == "":
		return usagef("redis-url: required (or USHER_REDIS_URL)")
	case *tenant == "":
		return usagef("tenant: required")
	case sub == "list" && *license == "":
		return usagef("license: required (a license id)")
	case fs.NArg() != want:
		return usagef("leases %s takes %d arguments, got %d", sub, want, fs.NArg())
	}
	client, err := statesync.NewClient(*redisURL, "usher-writer")
	if err != nil {
		return usageError{err}
	}
	defer client.Close()
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: client, Namespace: *namespace})
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if sub == "release" {
		res, err := w.Release(ctx, *tenant, fs.Arg(0))
		if err != nil {
			return err
		}
		if res.Status != statesync.LeaseReleased {
			fmt.Fprintf(stdout, "lease %q is not held in tenant %q (revision %s)\n", fs.Arg(0), *tenant, res.Revision)
			return nil
		}
		fmt.Fprintf(stdout, "released %s: its seat is free (revision %s)\n", fs.Arg(0), res.Revision)
		return nil
	}
	ls, err := w.ActiveLeases(ctx, *tenant, *license)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEASE\tSUBJECT\tCLIENT\tGRANTED\tEXPIRES")
	for _, l := range ls {
		client := l.ClientID
		if client == "" {
			client = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.ID, l.Subject, client, l.GrantedAt.Format(time.RFC3339), l.ExpiresAt.Format(time.RFC3339))
	}
	tw.Flush()
	fmt.Fprintf(stderr, "%d live leases of %s in tenant %s\n", len(ls), *license, *tenant)
	return nil
}
