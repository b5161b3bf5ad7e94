package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
	"github.com/usher-authz/usher/server"
)

// Check is one evaluate body.
type Check struct {
	TenantID string            `json:"tenant_id,omitempty"`
	Subject  map[string]string `json:"subject"`
	Seat     *struct {
		License string `json:"license"`
	} `json:"seat,omitempty"`
	Entitlement *struct {
		AssetID string `json:"asset_id"`
		Type    string `json:"type"`
	} `json:"entitlement,omitempty"`
	// MinRevision, after a write, is the revision it returned.
	MinRevision string `json:"min_revision,omitempty"`
}

// Answer is what /v1/evaluate answers.
type Answer struct {
	Allowed    bool                            `json:"allowed"`
	Reason     string                          `json:"reason"`
	DecisionID string                          `json:"decision_id"`
	Revision   string                          `json:"revision"`
	Error      *struct{ Code, Message string } `json:"error"`
}

var usher = &http.Client{Timeout: 250 * time.Millisecond}

// allowed asks the sidecar at base; any error means: deny.
func allowed(ctx context.Context, base string, c Check) (Answer, error) {
	body, _ := json.Marshal(c)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/evaluate", bytes.NewReader(body))
	resp, err := usher.Do(req)
	if err != nil {
		return Answer{}, err // fail closed: treat as denied
	}
	defer resp.Body.Close()
	var a Answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return Answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("usher: %d %s: %s", resp.StatusCode, a.Error.Code, a.Error.Message)
	}
	return a, nil
}

// An application asks the sidecar whether a user holds a seat (the client
// of docs/app-developers.md, run here against a sidecar of its own).
func Example_evaluateClient() {
	base := exampleSidecar(`{"licenses": [{"id": "lic_editor", "tenant_id": "acme", "name": "editor"}],
		"assignments": [{"id": "asg_1", "tenant_id": "acme", "license_id": "lic_editor", "assignee_id": "u1"}]}`)
	c := Check{TenantID: "acme", Subject: map[string]string{"id": "u1"}, Seat: &struct {
		License string `json:"license"`
	}{"editor"}}
	a, err := allowed(context.Background(), base, c)
	fmt.Println(a.Allowed, a.Reason, err)
	c.Subject["id"] = "u2"
	a, err = allowed(context.Background(), base, c)
	fmt.Println(a.Allowed, a.Reason, err)
	c.TenantID = ""
	_, err = allowed(context.Background(), base, c)
	fmt.Println(err)
	// Output:
	// true seat_assigned <nil>
	// false no_assignment <nil>
	// usher: 400 invalid_request: tenant_id: is required
}

// exampleSidecar serves state on a loopback port and returns its base URL.
func exampleSidecar(state string) string {
	e, _ := decision.NewEngine(decision.Config{})
	p, _ := policy.Compile(context.Background(), rego.FS, 1)
	e.SetPolicy(p)
	doc, _ := decision.ParseDocumentBytes([]byte(state))
	e.SetSnapshot(decision.NewSnapshot(doc, 1))
	srv, _ := server.New(server.Config{Engine: e})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	return "http://" + ln.Addr().String()
}

// Lease is what /v1/leases/checkout and /heartbeat answer.
type Lease struct {
	Granted bool   `json:"granted"`
	Reason  string `json:"reason"`
	Lease   *struct {
		ID        string    `json:"id"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"lease"`
	Error *struct{ Code, Message string } `json:"error"`
}

func leaseCall(ctx context.Context, base, op string, body any) (Lease, int, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/leases/"+op, bytes.NewReader(b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Lease{}, 0, err
	}
	defer resp.Body.Close()
	var l Lease
	err = json.NewDecoder(resp.Body).Decode(&l)
	return l, resp.StatusCode, err
}

// holdSeat checks out a floating seat for user, keeps it with heartbeats
// at half its remaining time while work runs, and releases it after.
func holdSeat(ctx context.Context, base, tenant, user, license string, work func(context.Context)) error {
	checkout := map[string]any{"tenant_id": tenant, "subject": map[string]string{"id": user},
		"seat": map[string]string{"license": license}, "client_id": "worker-1"}
	l, _, err := leaseCall(ctx, base, "checkout", checkout)
	if err != nil {
		return err
	}
	if !l.Granted || l.Lease == nil {
		return fmt.Errorf("no seat: %s", l.Reason) // no_seat_available: wait and retry, or queue the user
	}
	id := l.Lease.ID
	defer leaseCall(context.Background(), base, "release", map[string]string{"tenant_id": tenant, "lease_id": id})
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(l.Lease.ExpiresAt) / 2):
			}
			next, code, err := leaseCall(ctx, base, "heartbeat", map[string]string{"tenant_id": tenant, "lease_id": id})
			switch {
			case err == nil && code == http.StatusOK:
				l.Lease = next.Lease
			case code == http.StatusConflict || code == http.StatusNotFound:
				// lease_expired or lease_not_found: the seat is gone; check out
				// again (another user may have it now) or stop the work.
				stop()
				return
			}
			// 503 redis_unavailable: the lease holds until it expires; retry.
		}
	}()
	work(ctx)
	return nil
}

// A worker holds a floating seat while it works. (Compiled, not run: it
// needs a sidecar following Redis.)
func Example_holdSeat() {
	err := holdSeat(context.Background(), "http://127.0.0.1:8700", "acme", "gina", "cad", func(ctx context.Context) {
		// … the work the seat is for; ctx ends if the seat is lost.
	})
	fmt.Println(err)
}
