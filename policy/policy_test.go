package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/rego"
)

func TestCompileShipped(t *testing.T) {
	c, err := Compile(context.Background(), rego.FS, 7)
	if err != nil {
		t.Fatal(err)
	}
	if c.Revision() != 7 {
		t.Errorf("Revision() = %d, want 7", c.Revision())
	}
	active := decision.MakeSeatFacts(decision.LicStateActive, decision.ValidityInEffect, 0)
	seat := []struct {
		facts decision.SeatFacts
		want  decision.Outcome
	}{
		{decision.MakeSeatFacts(decision.LicStateAbsent, 0, decision.SeatDirect), decision.Outcome{Reason: decision.LicenseNotFound}},
		{decision.MakeSeatFacts(decision.LicStateSuspended, decision.ValidityExpired, 0), decision.Outcome{Reason: decision.LicenseSuspended}},
		{decision.MakeSeatFacts(decision.LicStateRevoked, 0, 0), decision.Outcome{Reason: decision.LicenseRevoked}},
		{decision.MakeSeatFacts(decision.LicStateActive, decision.ValidityNotYetValid, 0), decision.Outcome{Reason: decision.LicenseNotYetValid}},
		{decision.MakeSeatFacts(decision.LicStateActive, decision.ValidityExpired, 0), decision.Outcome{Reason: decision.LicenseExpired}},
		{active | decision.SeatDenied | decision.SeatDirect, decision.Outcome{Reason: decision.AssignmentDenied}},
		{active | decision.SeatDirect | decision.SeatViaGroup, decision.Outcome{Allowed: true, Reason: decision.SeatAssigned}},
		{active | decision.SeatViaGroup, decision.Outcome{Allowed: true, Reason: decision.SeatAssignedViaGroup}},
		{active | decision.SeatExpired | decision.SeatInactive, decision.Outcome{Reason: decision.AssignmentExpired}},
		{active | decision.SeatNotYetValid | decision.SeatInactive, decision.Outcome{Reason: decision.AssignmentNotYetValid}},
		{active | decision.SeatInactive, decision.Outcome{Reason: decision.AssignmentInactive}},
		{active, decision.Outcome{Reason: decision.NoAssignment}},
	}
	for _, tc := range seat {
		if got := c.Seat(tc.facts); got != tc.want {
			t.Errorf("Seat(%v) = %v, want %v", SeatInput(tc.facts), got, tc.want)
		}
	}
	ent := []struct {
		facts decision.EntFacts
		want  decision.Outcome
	}{
		{decision.EntDirect | decision.EntViaGroup, decision.Outcome{Allowed: true, Reason: decision.Entitled}},
		{decision.EntViaGroup | decision.EntPending, decision.Outcome{Allowed: true, Reason: decision.EntitledViaGroup}},
		{decision.EntPending | decision.EntExpired, decision.Outcome{Reason: decision.EntitlementPendingApproval}},
		{decision.EntExpired | decision.EntInactive, decision.Outcome{Reason: decision.EntitlementExpired}},
		{decision.EntInactive, decision.Outcome{Reason: decision.EntitlementInactive}},
		{0, decision.Outcome{Reason: decision.NotEntitled}},
	}
	for _, tc := range ent {
		if got := c.Entitlement(tc.facts); got != tc.want {
			t.Errorf("Entitlement(%v) = %v, want %v", EntInput(tc.facts), got, tc.want)
		}
	}
	for typ, want := range map[string][]string{
		"read_only":   {"admin", "contributor", "owner"},
		"contributor": {"admin", "owner"},
		"admin":       {"owner"},
		"owner":       nil,
		"billing":     nil,
	} {
		if diff := cmp.Diff(want, c.Implying(typ)); diff != "" {
			t.Errorf("Implying(%q) mismatch (-want +got):\n%s", typ, diff)
		}
	}
}

func shippedWith(t *testing.T, name, src string) fstest.MapFS {
	t.Helper()
	srcs, err := Sources(rego.FS, false)
	if err != nil {
		t.Fatal(err)
	}
	m := fstest.MapFS{}
	for n, s := range srcs {
		m[n] = &fstest.MapFile{Data: []byte(s)}
	}
	if src == "" {
		delete(m, name)
	} else {
		m[name] = &fstest.MapFile{Data: []byte(src)}
	}
	return m
}

func TestCompileCustomImplication(t *testing.T) {
	fsys := shippedWith(t, "implies.rego", `package usher.entitlement
implies := {"owner": ["billing", "admin"], "billing": ["owner"]}
`)
	c, err := Compile(context.Background(), fsys, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"owner"}, c.Implying("billing")); diff != "" {
		t.Errorf("Implying(billing) mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"billing", "owner"}, c.Implying("admin")); diff != "" {
		t.Errorf("Implying(admin) mismatch (-want +got):\n%s", diff)
	}
	if got := c.Implying("read_only"); got != nil {
		t.Errorf("Implying(read_only) = %v, want nil once the table drops it", got)
	}
}

func TestCompileRejects(t *testing.T) {
	for _, tc := range []struct {
		name, file, src, want string
	}{
		{"syntax", "seat.rego", "package usher.seat\ndecision := {", "rego_parse_error"},
		{"undefined", "seat.rego", "package usher.seat\ndecision := x if { x := 1; false }", "is undefined"},
		{"wrong shape", "seat.rego", "package usher.seat\ndecision := {\"allowed\": \"yes\", \"reason\": \"no_assignment\"}", "must be {\"allowed\": bool"},
		{"unknown reason", "seat.rego", "package usher.seat\ndecision := {\"allowed\": false, \"reason\": \"nope\"}", `unknown reason "nope"`},
		{"reason of the other check", "entitlement.rego", "package usher.entitlement\ndecision := {\"allowed\": false, \"reason\": \"no_assignment\"}", "not an entitlement reason"},
		{"implies not an object", "implies.rego", "package usher.entitlement\nimplies := [1]", "must be an object"},
		{"missing seat policy", "seat.rego", "", "is undefined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(context.Background(), shippedWith(t, tc.file, tc.src), 1)
			if err == nil || !errors.Is(err, ErrCompile) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Compile() error = %v, want ErrCompile containing %q", err, tc.want)
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	for b.Loop() {
		if _, err := Compile(context.Background(), rego.FS, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSourcesSkipHiddenDirs: a ConfigMap volume holds each file twice, once
// in a hidden timestamped directory; only the visible ones are modules.
func TestSourcesSkipHiddenDirs(t *testing.T) {
	fsys := shippedWith(t, "..2026_11_30_12_00_00.000/seat.rego", "package usher.seat\ndecision := 1")
	srcs, err := Sources(fsys, false)
	if err != nil {
		t.Fatal(err)
	}
	for name := range srcs {
		if strings.HasPrefix(name, "..") {
			t.Errorf("Sources read %s from a hidden directory", name)
		}
	}
	if _, err := Compile(context.Background(), fsys, 1); err != nil {
		t.Errorf("Compile with a hidden copy: %v", err)
	}
}
