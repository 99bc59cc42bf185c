package cloudzeroexporter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/exporter/exportertest"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadata"
)

// TestUserAgentNamesExporterAndDistribution: CloudZero (and a proxy's log)
// can tell which exporter and which build sent a request; a User-Agent set
// in confighttp's headers wins.
func TestUserAgentNamesExporterAndDistribution(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name    string
		build   component.BuildInfo
		headers map[string]configopaque.String
		want    string
	}{
		{"distribution", component.BuildInfo{Command: "otelcol-cloudzero", Version: "0.1.0"}, nil,
			"cloudzero-otel-exporter/" + czexporter.Version + " (otelcol-cloudzero/0.1.0; " + platform + ")"},
		{"no build info", component.BuildInfo{}, nil,
			"cloudzero-otel-exporter/" + czexporter.Version + " (" + platform + ")"},
		{"headers override", component.BuildInfo{Command: "otelcol-cloudzero", Version: "0.1.0"},
			map[string]configopaque.String{"User-Agent": "my-proxy-wants-this"}, "my-proxy-wants-this"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agents := make(chan string, 16)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case agents <- r.Header.Get("User-Agent"):
				default:
				}
			}))
			defer srv.Close()

			cfg := testConfig(srv.URL)
			cfg.ClientConfig.Headers = configopaque.MapList{}
			for k, v := range tc.headers {
				cfg.ClientConfig.Headers.Set(k, v)
			}
			require.NoError(t, cfg.Validate())
			set := exportertest.NewNopSettings(metadata.Type)
			set.BuildInfo = tc.build
			exp, err := NewFactory().CreateMetrics(context.Background(), set, cfg)
			require.NoError(t, err)
			require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
			require.NoError(t, exp.ConsumeMetrics(context.Background(), deltaSums(1, hour)))
			shutdown(t, exp)
			require.NotEmpty(t, agents, "no request reached the server")
			assert.Equal(t, tc.want, <-agents)
		})
	}
}
