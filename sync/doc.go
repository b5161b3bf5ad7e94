// Package statesync turns a source of state into engine snapshots: a state
// document on disk that it follows and reloads on change (and, later,
// Redis). Import it as statesync.
package statesync
