// Package deploy holds deployment material; its test checks that the
// Envoy configurations are valid v3 bootstrap configs and that the Istio
// and route files parse.
package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/usher-authz/usher/extauthz"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"encoding/json"
)

func TestEnvoyConfigs(t *testing.T) {
	files, _ := filepath.Glob("envoy/envoy-*.yaml")
	if len(files) < 2 {
		t.Fatalf("found %v, want the gRPC and HTTP variants", files)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		js, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var b bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(js, &b); err != nil {
			t.Errorf("%s is not a valid Envoy v3 bootstrap: %v", f, err)
			continue
		}
		if err := b.ValidateAll(); err != nil {
			t.Errorf("%s breaks Envoy's validation rules: %v", f, err)
		}
		if !strings.Contains(string(js), "envoy.filters.http.ext_authz") {
			t.Errorf("%s has no ext_authz filter", f)
		}
	}
}

func TestRoutesAndIstio(t *testing.T) {
	if _, err := extauthz.LoadRoutes("envoy/routes.yaml"); err != nil {
		t.Error(err)
	}
	files, _ := filepath.Glob("istio/*.yaml")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		var doc struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil || doc.APIVersion == "" || doc.Kind == "" {
			t.Errorf("%s: %v (apiVersion %q kind %q)", f, err, doc.APIVersion, doc.Kind)
		}
	}
	if len(files) < 3 {
		t.Errorf("istio material: %v", files)
	}
}
