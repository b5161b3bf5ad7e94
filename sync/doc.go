// Package statesync turns a source of state into engine snapshots: a state
// document on disk that it follows and reloads on change (FileFollower),
// or Redis, loaded in full and then followed through its change stream,
// with every round trip proving the stream continuous (RedisFollower). It
// also owns the writer side of Redis (Writer: put, delete, load, export),
// which keeps the key layout and change events of docs/redis.md. Import it
// as statesync.
package statesync
