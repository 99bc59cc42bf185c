package cloudzeroexporter

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/metadatatest"
)

// Finding (run with -race): the ledger gauges' callbacks, registered when
// the exporter is created (exporter.go registerGauges -> ledgerStats), read
// e.delivery, which start writes without synchronisation. The collector's
// metric reader collects from its own goroutine while components start, so
// this is a data race.
func TestGaugeCallbacksDuringStart(t *testing.T) {
	em := startEmulator(t)
	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })
	exp, err := NewFactory().CreateMetrics(context.Background(), metadatatest.NewSettings(tt), testConfig(em.URL))
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the periodic reader
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				var rm metricdata.ResourceMetrics
				_ = tt.Reader.Collect(context.Background(), &rm)
			}
		}
	}()
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	close(stop)
	wg.Wait()
	shutdown(t, exp)
}
