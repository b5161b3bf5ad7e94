package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// example is a command in a document's sh block and the answer it shows.
type example struct {
	where, cmd, want string
}

// docExamples finds, in the sh blocks of the README and docs/, the curl
// requests to the decision endpoints and `eval` runs whose answer follows.
func docExamples(t *testing.T) []example {
	t.Helper()
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	var out []example
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		in, cmd, want, start := false, "", "", 0
		flush := func() {
			if cmd != "" && want != "" {
				out = append(out, example{filepath.Base(file) + ":" + strconv.Itoa(start), cmd, strings.TrimSpace(want)})
			}
			cmd, want = "", ""
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "```"):
				flush()
				in = line == "```sh" && !in
			case !in:
			case strings.HasPrefix(line, "curl ") && strings.Contains(line, " -d '") || strings.HasPrefix(line, "go run ./cmd/usher eval"):
				flush()
				cmd, start = line, n
			case strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "go "):
				flush() // not a request the test can replay (a GET piped on, say)
			case cmd != "" && want == "" && strings.Count(cmd, "'")%2 == 1:
				cmd += "\n" + line // the body goes on
			case cmd != "" && strings.TrimSpace(line) == "":
				flush()
			case cmd != "":
				want += line + "\n"
			}
		}
	}
	return out
}

var (
	curlRe  = regexp.MustCompile(`(?s)^curl -s localhost:8700(\S+) -d '(.*)'$`)
	evalRe  = regexp.MustCompile(`(?s)^go run ./cmd/usher eval (?:--state (\S+) )?'(.*)'$`)
	idValue = regexp.MustCompile(`"decision_id":"[0-9a-f]{32}"`)
	// A local revision token's middle part is the process's own.
	localRev = regexp.MustCompile(`"revision":"l\.[0-9a-f]{8}\.`)
)

// matches reports whether got is want, where "..." (or "…") in want
// stands for anything and decision ids may differ.
func matches(want, got string) bool {
	got = localRev.ReplaceAllString(idValue.ReplaceAllString(got, `"decision_id":"..."`), `"revision":"l.process.`)
	want = localRev.ReplaceAllString(idValue.ReplaceAllString(strings.ReplaceAll(want, "…", "..."), `"decision_id":"..."`), `"revision":"l.process.`)
	var joined strings.Builder // a wrapped answer is one line
	for _, l := range strings.Split(want, "\n") {
		joined.WriteString(strings.TrimLeft(l, " "))
	}
	want = joined.String()
	parts := strings.Split(want, "...")
	pos := 0
	for i, p := range parts {
		j := strings.Index(got[pos:], p)
		if j < 0 || i == 0 && j != 0 {
			return false
		}
		pos += j + len(p)
	}
	return strings.HasSuffix(want, "...") || pos == len(got)
}

// Every answer the README and docs show for a request to the demo is the
// answer the demo gives (decision ids aside).
func TestDocExamples(t *testing.T) {
	examples := docExamples(t)
	if len(examples) < 8 {
		t.Fatalf("found %d examples in the docs, want the README's and app-developers.md's at least", len(examples))
	}
	p := startServe(t, nil)
	for _, ex := range examples {
		var got string
		if m := curlRe.FindStringSubmatch(ex.cmd); m != nil {
			resp, err := http.Post(p.base+m[1], "application/json", strings.NewReader(m[2]))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = strings.TrimSpace(string(b))
		} else if m := evalRe.FindStringSubmatch(ex.cmd); m != nil {
			args := []string{"eval"}
			if m[1] != "" {
				args = append(args, "--state", filepath.Join("../..", m[1]))
			}
			out, err := exec.Command(binary, append(args, m[2])...).Output()
			if err != nil {
				t.Errorf("%s: %s: %v", ex.where, ex.cmd, err)
				continue
			}
			got = strings.TrimSpace(string(out))
		} else {
			t.Errorf("%s: an example the test cannot run: %s", ex.where, ex.cmd)
			continue
		}
		if !matches(ex.want, got) {
			t.Errorf("%s: %s\nthe docs show\n  %s\nthe demo answers\n  %s", ex.where, ex.cmd, ex.want, got)
		}
	}
}

// The Go code the docs show is the compiled examples' code: every line of
// a go block in app-developers.md and backend.md is a line of
// server/example_test.go or sync/example_test.go.
func TestDocGoSnippetsAreExamples(t *testing.T) {
	var examples strings.Builder
	for _, f := range []string{"../../server/example_test.go", "../../sync/example_test.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		examples.Write(b)
	}
	have := map[string]bool{}
	for _, l := range strings.Split(examples.String(), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	for _, doc := range []string{"../../docs/app-developers.md", "../../docs/backend.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		in, n := false, 0
		for i, l := range strings.Split(string(b), "\n") {
			switch {
			case strings.HasPrefix(l, "```go"):
				in = true
			case strings.HasPrefix(l, "```"):
				in = false
			case in && strings.TrimSpace(l) != "":
				n++
				if !have[strings.TrimSpace(l)] {
					t.Errorf("%s:%d shows code no example has: %s", filepath.Base(doc), i+1, l)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s has no go block", doc)
		}
	}
}
