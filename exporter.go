package cloudzeroexporter

import (
	"context"
	"errors"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// errNotImplemented is returned until delivery lands: data is refused (and
// counted as failed by exporterhelper), never reported as sent.
var errNotImplemented = errors.New("cloudzero exporter: delivery is not implemented yet; data is not sent")

func newMetricsExporter(ctx context.Context, set exporter.Settings, cfg *Config) (exporter.Metrics, error) {
	return exporterhelper.NewMetrics(ctx, set, cfg,
		func(context.Context, pmetric.Metrics) error { return consumererror.NewPermanent(errNotImplemented) })
}
