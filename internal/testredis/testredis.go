// Package testredis finds the Redis that integration tests talk to.
package testredis

import (
	"os"
	"testing"
)

// URL returns USHER_TEST_REDIS_URL. Without it the test is skipped, except
// under CI=true, where it fails: CI always provides a Redis.
func URL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("USHER_TEST_REDIS_URL")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("USHER_TEST_REDIS_URL is not set; run the tests with scripts/test.sh")
		}
		t.Skip("SKIPPING: USHER_TEST_REDIS_URL is not set; scripts/test.sh provides a Redis")
	}
	return url
}
