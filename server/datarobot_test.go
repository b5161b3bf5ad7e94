package server_test

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// validate checks v against the subset of JSON Schema the DataRobot
// seeds use (type, properties, required, items, maxItems, minLength,
// maxLength, enum, format date-time), returning every violation.
func validate(schema map[string]any, v any, path string) []string {
	var errs []string
	if types := typesOf(schema["type"]); len(types) > 0 && !slices.Contains(types, jsonTypeOf(v)) &&
		!(jsonTypeOf(v) == "integer" && slices.Contains(types, "number")) {
		return []string{fmt.Sprintf("%s: type %s, want %v", path, jsonTypeOf(v), types)}
	}
	switch x := v.(type) {
	case map[string]any:
		for _, r := range anyList(schema["required"]) {
			if _, ok := x[r.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s: %s is required", path, r))
			}
		}
		props, _ := schema["properties"].(map[string]any)
		for k, sub := range props {
			if e, ok := x[k]; ok {
				errs = append(errs, validate(sub.(map[string]any), e, path+"."+k)...)
			}
		}
	case []any:
		if m, ok := schema["maxItems"].(float64); ok && len(x) > int(m) {
			errs = append(errs, fmt.Sprintf("%s: %d items, at most %v", path, len(x), m))
		}
		if items, ok := schema["items"].(map[string]any); ok {
			for i, e := range x {
				errs = append(errs, validate(items, e, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case string:
		if m, ok := schema["minLength"].(float64); ok && len(x) < int(m) {
			errs = append(errs, fmt.Sprintf("%s: %q shorter than %v", path, x, m))
		}
		if m, ok := schema["maxLength"].(float64); ok && len(x) > int(m) {
			errs = append(errs, fmt.Sprintf("%s: %q longer than %v", path, x, m))
		}
		if enum := anyList(schema["enum"]); enum != nil && !slices.Contains(enum, any(x)) {
			errs = append(errs, fmt.Sprintf("%s: %q not in %v", path, x, enum))
		}
		if schema["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, x); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %q is not a date-time", path, x))
			}
		}
	}
	return errs
}

func anyList(v any) []any { l, _ := v.([]any); return l }

func typesOf(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, e := range t {
			out = append(out, e.(string))
		}
		return out
	}
	return nil
}

func jsonTypeOf(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	}
	return "object"
}

func loadSchema(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/datarobot/" + name + ".schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// The DataRobot-compatible answers validate against the response schemas
// DataRobot publishes (shipped in testdata/datarobot), and list what
// evaluate allows.
func TestDataRobotReads(t *testing.T) {
	f := start(t, true, 0)
	check := func(schema, method, path, body string) map[string]any {
		t.Helper()
		status, _, got := f.do(t, method, path, body)
		if status != 200 {
			t.Fatalf("%s %s = %d %v", method, path, status, got)
		}
		if errs := validate(loadSchema(t, schema), got, "$"); len(errs) > 0 {
			t.Errorf("%s %s breaks the %s schema:\n%s", method, path, schema, strings.Join(errs, "\n"))
		}
		return got
	}
	check("evaluate", "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`)
	check("evaluate", "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "viewer", "subjectId": "u1", "subjectType": "user"}`)
	all := check("list", "GET", "/api/v2/seatLicenseAllocations/?orgId=acme", "")
	if all["totalCount"] != all["count"] || all["next"] != nil || all["previous"] != nil || all["count"].(float64) < 5 {
		t.Errorf("list acme = %v", all)
	}
	page := check("list", "GET", "/api/v2/seatLicenseAllocations/?orgId=acme&limit=2&offset=2", "")
	if page["count"] != 2.0 || page["next"] == nil || page["previous"] == nil || page["totalCount"] != all["totalCount"] {
		t.Errorf("a middle page = %v", page)
	}
	bySubject := check("list", "GET", "/api/v2/seatLicenseAllocations/?orgId=lim&subjectIds=p_b", "")
	if bySubject["count"] != 1.0 || bySubject["data"].([]any)[0].(map[string]any)["seatLicense"].(map[string]any)["name"] != "two" {
		t.Errorf("allocations holding p_b = %v", bySubject)
	}
	id := bySubject["data"].([]any)[0].(map[string]any)["id"].(string)
	one := check("get", "GET", "/api/v2/seatLicenseAllocations/"+id+"/", "")
	if one["id"] != id || one["currentAllocation"] != 3.0 || one["limit"] != 2.0 {
		t.Errorf("get %s = %v", id, one)
	}
	if status, _, _ := f.do(t, "GET", "/api/v2/seatLicenseAllocations/00000000-0000-5000-8000-000000000000/", ""); status != 404 {
		t.Errorf("an unknown allocation = %d, want 404", status)
	}
	if status, _, got := f.do(t, "GET", "/api/v2/seatLicenseAllocations/?limit=500", ""); status != 400 || !strings.Contains(fmt.Sprint(got), "limit: must be a whole number from 0 to 100") {
		t.Errorf("limit 500 = %d %v", status, got)
	}
}
