package statesync_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/testredis"
	statesync "github.com/usher-authz/usher/sync"
)

// testRedis returns the test Redis (USHER_TEST_REDIS_URL) and a namespace
// of this test's own, removed afterwards. Without a Redis the test is
// skipped, except under CI=true, where it fails.
func testRedis(t testing.TB) (redis.UniversalClient, string, string) {
	t.Helper()
	url := testredis.URL(t)
	c, err := statesync.NewClient(url, "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	rand.Read(b[:])
	ns := "test-" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, "{"+ns+"}*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		c.Close()
	})
	return c, ns, url
}

func newWriter(t testing.TB, c redis.UniversalClient, ns string) *statesync.Writer {
	t.Helper()
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: c, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// semanticsWriter is a writer on ns whose namespace holds the semantics
// test state.
func semanticsWriter(t *testing.T, c redis.UniversalClient, ns string) *statesync.Writer {
	t.Helper()
	w := newWriter(t, c, ns)
	if _, err := w.Load(context.Background(), parse(t, semanticsState(t)), false); err != nil {
		t.Fatal(err)
	}
	return w
}

func parse(t testing.TB, s string) *decision.Document {
	t.Helper()
	d, err := decision.DecodeDocument(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func render(t testing.TB, d *decision.Document) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := decision.NewSnapshot(d, 0).Document().WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// dump is everything Redis holds in a namespace, by logical content (a
// DUMP is not stable: Redis rehashes incrementally), to prove a refused
// write changed nothing.
func dump(t *testing.T, c redis.UniversalClient, ns string) map[string]any {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "{"+ns+"}*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for _, k := range keys {
		switch typ := c.Type(ctx, k).Val(); typ {
		case "hash":
			out[k] = c.HGetAll(ctx, k).Val()
		case "set":
			m := c.SMembers(ctx, k).Val()
			sort.Strings(m)
			out[k] = m
		case "stream":
			out[k] = c.XRange(ctx, k, "-", "+").Val()
		default:
			out[k] = typ
		}
	}
	return out
}

// corpusAssignments and corpusTenants count the semantics state's
// assignments and tenants.
func corpusAssignments(t *testing.T) int { return len(parse(t, semanticsState(t)).Assignments) }

func corpusTenants(t *testing.T) int { return len(parse(t, semanticsState(t)).ByTenant()) }
