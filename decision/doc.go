// Package decision is Usher's transport-free engine: the state document
// and its validation, the immutable per-tenant snapshot with its indexes,
// the seat and entitlement semantics that turn a request into facts, and
// the ristretto decision cache. The policy that orders facts into a
// decision is supplied through the Policy interface (package policy).
package decision
