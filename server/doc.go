// Package server is Usher's HTTP front on fasthttp: it parses evaluate,
// batch and DataRobot-compatible bodies into decision requests (exact
// keys, bounded ids), asks the engine, and encodes decisions, health,
// readiness, status and errors as JSON. It also hosts Envoy's HTTP
// ext_authz service under /ext_authz/, a thin adapter over authz, and
// counts every answer in usher_requests_total.
package server
