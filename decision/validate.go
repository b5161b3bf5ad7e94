package decision

// The rules that span records.

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
)

// Validate checks the rules that span records: unique ids per kind within a
// tenant, and references that stay inside a tenant. Each record is already
// valid on its own (the Decode functions check that).
func (d *Document) Validate() error {
	// Rules hold per tenant: group the records' indexes by tenant and check
	// tenants on every core with small maps, then report the violations in
	// document order.
	type indexes struct{ lics, asgs, ents, grps []int32 }
	parts := tenantParts[indexes]{m: map[string]*indexes{}}
	get := parts.get
	for i, r := range d.Licenses {
		x := get(r.TenantID)
		x.lics = append(x.lics, int32(i))
	}
	for i, r := range d.Assignments {
		x := get(r.TenantID)
		x.asgs = append(x.asgs, int32(i))
	}
	for i, r := range d.Entitlements {
		x := get(r.TenantID)
		x.ents = append(x.ents, int32(i))
	}
	for i, r := range d.Groups {
		x := get(r.TenantID)
		x.grps = append(x.grps, int32(i))
	}
	type found struct {
		order [3]int // rule, record index, member
		err   error
	}
	check := func(tenant string, x *indexes, out []found) []found {
		q := strconv.Quote(tenant)
		lics := make(map[string]bool, len(x.lics))
		for _, i := range x.lics {
			l := d.Licenses[i]
			if lics[l.ID] {
				out = append(out, found{[3]int{0, int(i)}, &RecordError{Kind: KindLicense, Index: int(i), ID: l.ID, Field: "id", Rule: "must be unique among licenses of tenant " + q}})
			}
			lics[l.ID] = true
		}
		groups := make(map[string]bool, len(x.grps))
		for _, i := range x.grps {
			g := d.Groups[i]
			if groups[g.ID] {
				out = append(out, found{[3]int{1, int(i)}, &RecordError{Kind: KindGroup, Index: int(i), ID: g.ID, Field: "id", Rule: "must be unique among groups of tenant " + q}})
			}
			groups[g.ID] = true
		}
		seen := make(map[string]bool, len(x.asgs))
		for _, i := range x.asgs {
			a := d.Assignments[i]
			if seen[a.ID] {
				out = append(out, found{[3]int{2, int(i), 0}, &RecordError{Kind: KindAssignment, Index: int(i), ID: a.ID, Field: "id", Rule: "must be unique among assignments of tenant " + q}})
			}
			seen[a.ID] = true
			if !lics[a.LicenseID] {
				out = append(out, found{[3]int{2, int(i), 1}, &RecordError{Kind: KindAssignment, Index: int(i), ID: a.ID, Field: "license_id",
					Rule: fmt.Sprintf("must name a license of tenant %q, no license %q there", tenant, a.LicenseID), ref: "license\x00" + a.LicenseID}})
			}
		}
		clear(seen)
		for _, i := range x.ents {
			e := d.Entitlements[i]
			if seen[e.ID] {
				out = append(out, found{[3]int{3, int(i)}, &RecordError{Kind: KindEntitlement, Index: int(i), ID: e.ID, Field: "id", Rule: "must be unique among entitlements of tenant " + q}})
			}
			seen[e.ID] = true
		}
		for _, i := range x.grps {
			g := d.Groups[i]
			for j, m := range g.Members {
				if m.Type == GroupPrincipal && !groups[m.ID] {
					out = append(out, found{[3]int{4, int(i), j}, &RecordError{Kind: KindGroup, Index: int(i), ID: g.ID, Field: fmt.Sprintf("members[%d].id", j),
						Rule: fmt.Sprintf("must name a group of tenant %q, no group %q there", tenant, m.ID), ref: "group\x00" + m.ID}})
				}
			}
		}
		return out
	}
	tenants := make([]string, 0, len(parts.m))
	for t := range parts.m {
		tenants = append(tenants, t)
	}
	workers := min(runtime.GOMAXPROCS(0), max(1, len(tenants)/8))
	results := make([][]found, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(tenants); i += workers {
				results[w] = check(tenants[i], parts.m[tenants[i]], results[w])
			}
		}()
	}
	wg.Wait()
	var all []found
	for _, r := range results {
		all = append(all, r...)
	}
	slices.SortFunc(all, func(a, b found) int { return slices.Compare(a.order[:], b.order[:]) })
	errs := make([]error, len(all))
	for i, f := range all {
		errs[i] = f.err
	}
	return errors.Join(errs...)
}
