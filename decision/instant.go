package decision

// Times: Instant, its parsing and printing.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Instant is a point in time: microseconds since 0001-01-01T00:00:00Z,
// plus one. Every RFC 3339 time of the years 0001 to 9999 fits and orders
// correctly (Unix nanoseconds would wrap outside 1678–2262); digits finer
// than a microsecond are dropped. The zero Instant is no time at all (a
// request without "at" asks about now), so it cannot be mistaken for a
// real one, not even the Unix epoch. NoTime stands for a JSON null: no bound.
type Instant int64

// NoTime is the null Instant.
const NoTime Instant = math.MinInt64

// unixYear1 is 0001-01-01T00:00:00Z in Unix seconds.
const unixYear1 = -62135596800

// Set reports whether t is a real time rather than null.
func (t Instant) Set() bool { return t != NoTime }

// Or is t, or now when t is no time (zero: a request that asks about now;
// NoTime).
func (t Instant) Or(now Instant) Instant {
	if t == 0 || t == NoTime {
		return now
	}
	return t
}

// InstantOf converts a time.Time of year 0001 or later.
func InstantOf(t time.Time) Instant {
	return Instant((t.Unix()-unixYear1)*1e6 + int64(t.Nanosecond()/1e3) + 1)
}

// Time converts t back; t must be set and not zero.
func (t Instant) Time() time.Time {
	us := int64(t) - 1
	return time.Unix(us/1e6+unixYear1, us%1e6*1e3).UTC()
}

// AppendJSON appends t as an RFC 3339 JSON string, or null.
func (t Instant) AppendJSON(b []byte) []byte {
	if !t.Set() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.Time().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// Quote quotes a value for an error message, cut to its first 64 bytes
// (with the full length said): a message never echoes a huge input.
func Quote(s string) string {
	if len(s) <= shortLen {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:shortLen]), len(s))
}

// Short is s as it is, or cut to its first 64 bytes with the full length
// said, for a message that shows a value unquoted.
func Short(s string) string {
	if len(s) <= shortLen {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:shortLen], len(s))
}

const shortLen = 64

// ParseInstant parses an RFC 3339 time ("T" and "Z" in either case, as
// RFC 3339 allows). A leap second (:60) is refused: Go's clock, and so
// Usher's, has none; write 23:59:59.999999 instead.
func ParseInstant(s string) (Instant, error) {
	v := s
	if strings.ContainsAny(v, "tz") {
		v = strings.NewReplacer("t", "T", "z", "Z").Replace(v)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		if len(v) >= 19 && v[10] == 'T' && v[17:19] == "60" {
			return NoTime, fmt.Errorf("must be an RFC 3339 time without a leap second (use 23:59:59.999999), got %s", Quote(s))
		}
		return NoTime, fmt.Errorf("must be an RFC 3339 time, got %s", Quote(s))
	}
	if t.UTC().Year() < 1 {
		return NoTime, fmt.Errorf("must be an RFC 3339 time in the years 0001 to 9999, got %s", Quote(s))
	}
	return InstantOf(t), nil
}
