package decision

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// docs/state.md documents every field the decoders read, so the two cannot
// drift: a field added to a wire struct fails here until it is described.
func TestStateDocNamesEveryField(t *testing.T) {
	b, err := os.ReadFile("../docs/state.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, w := range []any{licenseWire{}, assignmentWire{}, entitlementWire{}, groupWire{}, memberWire{}} {
		typ := reflect.TypeOf(w)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("docs/state.md does not describe %s.%s (`%s`)", typ.Name(), typ.Field(i).Name, name)
			}
		}
	}
}
