// Package server is Usher's HTTP front on fasthttp: it parses evaluate,
// batch and DataRobot-compatible bodies into decision requests, asks the
// engine, and encodes decisions, health, status and errors as JSON.
package server
