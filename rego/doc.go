// Package rego embeds Usher's shipped Rego policies and their tests: the
// seat and entitlement decision rules and the entitlement implication
// table. The policy package compiles them (or a --policy-dir copy).
package rego

import "embed"

// FS holds the shipped .rego files, tests included.
//
//go:embed *.rego
var FS embed.FS
