// Package errlines keeps a context prefix on every line of an error that
// joins several (errors.Join), so "state big.json: " or "routes[0]: "
// stays with each problem a multi-line message lists.
package errlines

import "strings"

// Prefix returns err with prefix on each of its lines; errors.Is and
// errors.As still see err. nil stays nil.
func Prefix(prefix string, err error) error {
	if err == nil {
		return nil
	}
	return &prefixed{prefix, err}
}

type prefixed struct {
	prefix string
	err    error
}

func (p *prefixed) Error() string {
	lines := strings.Split(p.err.Error(), "\n")
	for i, l := range lines {
		lines[i] = p.prefix + l
	}
	return strings.Join(lines, "\n")
}

func (p *prefixed) Unwrap() error { return p.err }
