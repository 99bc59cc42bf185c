package cloudzerometric

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configauth"
	"go.opentelemetry.io/collector/config/configoptional"
)

func TestConfigFromYAML(t *testing.T) {
	t.Setenv("CZ_TEST_KEY", testKey)
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600))
	ctx := context.Background()
	for _, tc := range []struct {
		name, yaml string
		check      func(*testing.T, *Config)
		err        []string // substrings of the error; none: no error
	}{
		{
			name: "env expansion and defaults",
			yaml: `
api_key: ${env:CZ_TEST_KEY}
streams:
  - {name: requests, metrics: [app.requests], element_name: customer.id, filter: {"custom:feature": feature}}
flush_interval: 30s`,
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, testKey, string(c.APIKey))
				assert.Equal(t, "https://api.cloudzero.com", c.ClientConfig.Endpoint)
				assert.Equal(t, 30*time.Second, c.FlushInterval)
				assert.Equal(t, "sum", c.Delivery)
				assert.Equal(t, "feature", c.Streams[0].Filter["custom:feature"])
			},
		},
		{
			name: "file expansion",
			yaml: "api_key: ${file:" + keyFile + "}\nstreams: [{name: s, metrics: [m], element_name: e}]",
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, testKey+"\n", string(c.APIKey), "kept as read; the exporter trims it")
			},
		},
		{
			name: "unknown key",
			yaml: "api_key: k\ngranularty: DAILY\nstreams: [{name: s, metrics: [m], element_name: e}]",
			err:  []string{`unknown key "granularty"`},
		},
		{
			name: "every problem, each naming its field",
			yaml: "api_key: k\nstreams: [{name: s, metrics: [m]}]\ndelivery: bulk\nflush_interval: 10ms",
			err: []string{
				`streams[0] ("s"): element_name: must name the attribute`,
				`delivery: "bulk" must be sum or replace`,
				"flush_interval: must be at least 1s",
			},
		},
		{
			name: "replace without storage: New checks it, with WithStorageDir",
			yaml: "api_key: k\nstreams: [{name: s, metrics: [m], element_name: e}]\ndelivery: replace",
			check: func(t *testing.T, c *Config) {
				assert.Equal(t, "replace", c.Delivery)
				assert.Nil(t, c.Storage)
			},
		},
		{name: "missing key", yaml: "streams: [{name: s, metrics: [m], element_name: e}]", err: []string{"api_key: must be set"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ConfigFromYAML(ctx, []byte(tc.yaml))
			if len(tc.err) > 0 {
				require.Error(t, err)
				for _, s := range tc.err {
					assert.Contains(t, err.Error(), s)
				}
				assert.NotContains(t, err.Error(), testKey)
				return
			}
			require.NoError(t, err)
			tc.check(t, cfg)
		})
	}
}

// TestConfigFromCollectorFile reads the demo's collector config: an app can
// share the collector's YAML.
func TestConfigFromCollectorFile(t *testing.T) {
	t.Setenv("CLOUDZERO_ENDPOINT", "http://127.0.0.1:8089")
	t.Setenv("CLOUDZERO_API_KEY", testKey)
	ctx := context.Background()
	path := filepath.Join("..", "demo", "collector.yaml")
	cfg, err := ConfigFromCollectorFile(ctx, path, "cloudzero")
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:8089", cfg.ClientConfig.Endpoint)
	assert.Len(t, cfg.Streams, 3)
	assert.Equal(t, 10*time.Second, cfg.FlushInterval)

	_, err = ConfigFromCollectorFile(ctx, path, "cloudzero/other")
	require.ErrorContains(t, err, `no exporter "cloudzero/other" under exporters (has: cloudzero)`)
	_, err = ConfigFromCollectorFile(ctx, filepath.Join(t.TempDir(), "missing.yaml"), "cloudzero")
	require.ErrorContains(t, err, "missing.yaml")
}

// TestNewRefusesCollectorOnlySettings: storage names an extension, auth an
// authenticator: neither exists in-process, and New says what to do.
func TestNewRefusesCollectorOnlySettings(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig("http://127.0.0.1:1")
	id := component.MustNewID("file_storage")
	cfg.Storage = &id
	cfg.ClientConfig.Auth = configoptional.Some(configauth.Config{AuthenticatorID: component.MustNewID("oauth2client")})
	_, err := New(ctx, cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "storage: \"file_storage\" names a collector extension; in-process, persist with cloudzerometric.WithStorageDir(dir)")
	assert.Contains(t, err.Error(), "auth: authenticator extensions need a collector")

	// With a directory, the config's storage is replaced by it.
	cfg = testConfig("http://127.0.0.1:1")
	cfg.Storage = &id
	cfg.Delivery = "replace"
	exp, err := New(ctx, cfg, WithStorageDir(filepath.Join(t.TempDir(), "new", "dir")))
	require.NoError(t, err)
	require.NoError(t, exp.Shutdown(ctx))
	assert.Equal(t, &id, cfg.Storage, "the caller's config is not changed")

	_, err = New(ctx, nil)
	require.ErrorContains(t, err, "nil config")
	cfg = testConfig("http://127.0.0.1:1")
	cfg.Delivery = "replace"
	_, err = New(ctx, cfg)
	require.ErrorContains(t, err, "delivery: replace needs storage")
}
