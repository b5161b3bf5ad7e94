package statesync_test

import (
	"context"
	"fmt"

	"github.com/usher-authz/usher/decision"
	statesync "github.com/usher-authz/usher/sync"
)

// A license backend writes one assignment; every sidecar following the
// namespace applies it within milliseconds. (Compiled, not run: it needs
// a Redis.)
func ExampleWriter_Put() {
	ctx := context.Background()
	client, err := statesync.NewClient("redis://127.0.0.1:6379/0", "license-backend")
	if err != nil {
		panic(err)
	}
	defer client.Close()
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: client, Namespace: "usher"})
	if err != nil {
		panic(err)
	}
	rev, err := w.Put(ctx, decision.KindAssignment, []byte(`{"id": "asg_9", "tenant_id": "acme",
		"license_id": "lic_editor", "assignee_id": "gina", "reservation": "reserved"}`))
	if err != nil {
		// A record that breaks a rule names the record, field and rule;
		// nothing was written.
		fmt.Println("refused:", err)
		return
	}
	// Pass rev.String() as min_revision to read the write back from any
	// sidecar of the namespace (docs/app-developers.md).
	fmt.Println("written at revision", rev)
}
