package cloudzeroexporter

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/config/configmiddleware"
	"go.opentelemetry.io/collector/extension/extensionmiddleware"
)

// connCloser closes the HTTP client's idle keep-alive connections at
// shutdown, so that none outlives the exporter (an SDK app that creates and
// shuts down exporters, or checks for leaked goroutines, sees none).
// http.Client.CloseIdleConnections cannot: confighttp wraps the transport in
// round trippers that do not pass it on. So the client is built with one
// more middleware, the innermost (applied first), which keeps the
// transport confighttp made.
type connCloser struct {
	component.StartFunc
	component.ShutdownFunc
	mu        sync.Mutex
	transport []http.RoundTripper
}

var connCloserID = component.MustNewID("cloudzero_connections")

func (c *connCloser) GetHTTPRoundTripper(context.Context) (extensionmiddleware.WrapHTTPRoundTripperFunc, error) {
	return func(_ context.Context, rt http.RoundTripper) (http.RoundTripper, error) {
		c.mu.Lock()
		c.transport = append(c.transport, rt)
		c.mu.Unlock()
		return rt, nil
	}, nil
}

// toClient is cc.ToClient with the connCloser as its innermost middleware.
func (c *connCloser) toClient(ctx context.Context, cc confighttp.ClientConfig, host component.Host, set component.TelemetrySettings) (*http.Client, error) {
	exts := maps.Clone(host.GetExtensions())
	if exts == nil {
		exts = map[component.ID]component.Component{}
	}
	exts[connCloserID] = c
	cc.Middlewares = append(slices.Clone(cc.Middlewares), configmiddleware.Config{ID: connCloserID})
	return cc.ToClient(ctx, exts, set)
}

func (c *connCloser) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rt := range c.transport {
		if ci, ok := rt.(interface{ CloseIdleConnections() }); ok {
			ci.CloseIdleConnections()
		}
	}
}
