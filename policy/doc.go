// Package policy compiles Usher's Rego policies with OPA, evaluates them
// once over every fact vector the engine can produce (so a decision costs
// a table lookup, not a Rego evaluation), and hot-reloads a policy
// directory, keeping the last good revision when a new one fails. It also
// holds the usher.seat / usher.entitled built-ins the route policy calls.
package policy
